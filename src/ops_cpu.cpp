// Fused CPU implementations of tram::ops (see ops_cpu.h).
//
// Compiled with -ffp-contract=off (src/CMakeLists.txt): a fused multiply-add
// would round once where the reference rounds twice.
#include "ops_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/autograd.h>

#include <algorithm>
#include <array>
#include <limits>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

namespace tram::ops::cpu_impl {
namespace {

using torch::Tensor;

// Elements per block: a thread's unit of work, and one partial sum of a
// reduction (fixed, so that the summation order is too).
constexpr int64_t kBlockElements = 1 << 14;

// fp16/bf16 are computed in fp32 and rounded once when written, as the
// reference (and PyTorch's fused optimizers) do.
template <typename T>
using opmath_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>
inline opmath_t<T> widen(T value) {
  return static_cast<opmath_t<T>>(value);
}

struct Block {
  size_t tensor;
  int64_t begin, end;
};

// The blocks of every tensor of `list`, tensor by tensor.
std::vector<Block> blocks_of(torch::TensorList list) {
  std::vector<Block> blocks;
  for (size_t i = 0; i < list.size(); ++i) {
    const int64_t n = list[i].numel();
    for (int64_t begin = 0; begin < n; begin += kBlockElements) {
      blocks.push_back({i, begin, std::min(n, begin + kBlockElements)});
    }
  }
  return blocks;
}

// body(block index, block) for every block, on at::parallel_for's threads.
template <typename Body>
void for_each_block(const std::vector<Block>& blocks, const Body& body) {
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) body(static_cast<size_t>(b), blocks[static_cast<size_t>(b)]);
  });
}

// Calls fn(T{}) with T the C++ type of `type` (fp32/fp64/fp16/bf16).
template <typename Fn>
void with_type(torch::ScalarType type, const Fn& fn) {
  switch (type) {
    case torch::kFloat: return fn(float{});
    case torch::kDouble: return fn(double{});
    case torch::kHalf: return fn(c10::Half{});
    case torch::kBFloat16: return fn(c10::BFloat16{});
    default: TORCH_CHECK(false, "tram CPU ops: unsupported dtype ", type, " (internal error)");
  }
}

// Calls fn(std::integral_constant<Scaling, s>{}) for the scaling `s`.
template <typename Fn>
void with_scaling(Scaling scaling, const Fn& fn) {
  switch (scaling) {
    case Scaling::kIdentity: return fn(std::integral_constant<Scaling, Scaling::kIdentity>{});
    case Scaling::kAdaptive: return fn(std::integral_constant<Scaling, Scaling::kAdaptive>{});
    case Scaling::kFisher: return fn(std::integral_constant<Scaling, Scaling::kFisher>{});
    case Scaling::kReleasedIdentity: return fn(std::integral_constant<Scaling, Scaling::kReleasedIdentity>{});
    case Scaling::kReleasedAdaptive: return fn(std::integral_constant<Scaling, Scaling::kReleasedAdaptive>{});
  }
  TORCH_CHECK(false, "tram CPU ops: unknown scaling ", static_cast<int>(scaling), " (internal error)");
}

// w + coef * direction(w, g) with the reference's operations in its order
// (ops_reference.cpp: perturbation(), then + w), one rounding each.
template <Scaling kScaling, typename A>
inline A ascended(A w, A g, A eta, A coef) {
  A e;
  if constexpr (kScaling == Scaling::kIdentity) {  // g
    e = g * coef;
  } else if constexpr (kScaling == Scaling::kAdaptive) {  // T^2 g, T = |w| + eta
    const A t = std::abs(w) + eta;
    e = t * t;
    e = e * g;
    e = e * coef;
  } else if constexpr (kScaling == Scaling::kReleasedAdaptive) {  // T^2
    const A t = std::abs(w) + eta;
    e = t * t;
    e = e * coef;
  } else if constexpr (kScaling == Scaling::kFisher) {  // g / f, f = 1 + eta g^2
    A f = g * g;
    f = f * eta;
    f = f + A(1);
    e = g / f;
    e = e * coef;
  } else {  // kReleasedIdentity: every element moves by coef
    e = coef;
  }
  return e + w;
}

// The term whose square the ascent's squared norm sums (docs/ALGORITHMS.md §2).
template <Scaling kScaling, typename A>
inline A norm_term(A w, A g, A eta) {
  if constexpr (kScaling == Scaling::kAdaptive || kScaling == Scaling::kReleasedAdaptive) {
    return (std::abs(w) + eta) * g;
  } else if constexpr (kScaling == Scaling::kFisher) {
    // g / sqrt(f): g^2 / f would turn an overflowing g^2 into inf / inf.
    A f = g * g;
    f = f * eta;
    f = f + A(1);
    return g / std::sqrt(f);
  } else {
    (void)w;
    (void)eta;
    return g;
  }
}

// sum of term(i)^2 over [begin, end) in fp64, in eight independent lanes
// (which the compiler can vectorise without reassociating a lane).
template <typename Term>
double sum_of_squares(int64_t begin, int64_t end, const Term& term) {
  constexpr int kLanes = 8;
  std::array<double, kLanes> lanes{};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const double t = static_cast<double>(term(i + k));
      lanes[k] += t * t;
    }
  }
  for (int k = 0; i < end; ++i, ++k) {
    const double t = static_cast<double>(term(i));
    lanes[k] += t * t;
  }
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

// The partials in block order: the result does not depend on the threads.
double sum_in_order(const std::vector<double>& partials) {
  double total = 0.0;
  for (double p : partials) total += p;
  return total;
}

// A 0-dim tensor of `type` holding `value` on the CPU.
Tensor scalar_tensor(double value, torch::ScalarType type) {
  return torch::full({}, value, torch::TensorOptions().dtype(type));
}

void mark_modified(torch::TensorList tensors) {
  // Raw writes, like an in-place ATen op: autograd sees the new version.
  for (const Tensor& t : tensors) torch::autograd::impl::bump_version(t);
}

}  // namespace

bool supported(std::initializer_list<torch::TensorList> lists) {
  const torch::TensorList first = *lists.begin();
  if (first.empty()) return false;
  for (const torch::TensorList list : lists) {
    if (list.size() != first.size()) return false;
    for (size_t i = 0; i < list.size(); ++i) {
      const Tensor& t = list[i];
      if (!t.defined() || !t.device().is_cpu() || !t.is_contiguous() || t.scalar_type() != first[i].scalar_type()) {
        return false;
      }
      const auto type = t.scalar_type();
      if (type != torch::kFloat && type != torch::kDouble && type != torch::kHalf && type != torch::kBFloat16) {
        return false;
      }
    }
  }
  return true;
}

Tensor squared_norm(torch::TensorList params, torch::TensorList grads, const AscentSpec& spec) {
  const std::vector<Block> blocks = blocks_of(params);
  std::vector<double> partials(blocks.size(), 0.0);
  const bool uses_eta = !spec.eta.empty();
  with_scaling(spec.scaling, [&](auto scaling) {
    for_each_block(blocks, [&](size_t b, const Block& block) {
      const double eta = uses_eta ? spec.eta[block.tensor] : 0.0;
      with_type(params[block.tensor].scalar_type(), [&](auto type) {
        using T = decltype(type);
        using A = opmath_t<T>;
        const T* w = params[block.tensor].const_data_ptr<T>();
        const T* g = grads[block.tensor].const_data_ptr<T>();
        const A eta_a = static_cast<A>(eta);
        partials[b] = sum_of_squares(block.begin, block.end, [&](int64_t i) {
          return norm_term<decltype(scaling)::value>(widen(w[i]), widen(g[i]), eta_a);
        });
      });
    });
  });
  bool any_double = false;
  for (const Tensor& p : params) any_double = any_double || p.scalar_type() == torch::kDouble;
  return scalar_tensor(sum_in_order(partials), any_double ? torch::kDouble : torch::kFloat);
}

void ascend_with_backup(torch::TensorList params, torch::TensorList grads, torch::TensorList backups,
                        const AscentSpec& spec) {
  const std::vector<Block> blocks = blocks_of(params);
  const bool uses_eta = !spec.eta.empty();
  with_scaling(spec.scaling, [&](auto scaling) {
    for_each_block(blocks, [&](size_t, const Block& block) {
      const size_t k = block.tensor;
      with_type(params[k].scalar_type(), [&](auto type) {
        using T = decltype(type);
        using A = opmath_t<T>;
        T* w = params[k].data_ptr<T>();
        const T* g = grads[k].const_data_ptr<T>();
        T* backup = backups[k].data_ptr<T>();
        const A eta = static_cast<A>(uses_eta ? spec.eta[k] : 0.0), coef = static_cast<A>(spec.coef[k]);
        for (int64_t i = block.begin; i < block.end; ++i) {
          const T before = w[i];
          backup[i] = before;
          w[i] = static_cast<T>(ascended<decltype(scaling)::value>(widen(before), widen(g[i]), eta, coef));
        }
      });
    });
  });
  mark_modified(params);
  mark_modified(backups);
}

void ascend_from(torch::TensorList params, torch::TensorList sources, torch::TensorList grads,
                 const AscentSpec& spec) {
  const std::vector<Block> blocks = blocks_of(params);
  const bool uses_eta = !spec.eta.empty();
  with_scaling(spec.scaling, [&](auto scaling) {
    for_each_block(blocks, [&](size_t, const Block& block) {
      const size_t k = block.tensor;
      with_type(params[k].scalar_type(), [&](auto type) {
        using T = decltype(type);
        using A = opmath_t<T>;
        // `params` may alias `sources`: each element is read before it is written.
        T* w = params[k].data_ptr<T>();
        const T* source = sources[k].const_data_ptr<T>();
        const T* g = grads[k].const_data_ptr<T>();
        const A eta = static_cast<A>(uses_eta ? spec.eta[k] : 0.0), coef = static_cast<A>(spec.coef[k]);
        for (int64_t i = block.begin; i < block.end; ++i) {
          w[i] = static_cast<T>(ascended<decltype(scaling)::value>(widen(source[i]), widen(g[i]), eta, coef));
        }
      });
    });
  });
  mark_modified(params);
}

void swap(torch::TensorList a, torch::TensorList b) {
  const std::vector<Block> blocks = blocks_of(a);
  for_each_block(blocks, [&](size_t, const Block& block) {
    const size_t k = block.tensor;
    with_type(a[k].scalar_type(), [&](auto type) {
      using T = decltype(type);
      T* x = a[k].data_ptr<T>();
      T* y = b[k].data_ptr<T>();
      for (int64_t i = block.begin; i < block.end; ++i) std::swap(x[i], y[i]);
    });
  });
  mark_modified(a);
  mark_modified(b);
}

Tensor squared_distance(torch::TensorList a, torch::TensorList b) {
  const std::vector<Block> blocks = blocks_of(a);
  std::vector<double> partials(blocks.size(), 0.0);
  for_each_block(blocks, [&](size_t index, const Block& block) {
    const size_t k = block.tensor;
    with_type(a[k].scalar_type(), [&](auto type) {
      using T = decltype(type);
      const T* x = a[k].const_data_ptr<T>();
      const T* y = b[k].const_data_ptr<T>();
      partials[index] = sum_of_squares(block.begin, block.end, [&](int64_t i) { return widen(x[i]) - widen(y[i]); });
    });
  });
  return scalar_tensor(sum_in_order(partials), torch::kDouble);
}

namespace {

// KL(p || q) of one row from the scratch: ep = exp(x_p - max_p) with sum
// sp, and the log-probabilities log p = (x_p - max_p) - log sp. A class with
// p = 0 contributes 0 (the limit of p log p), also where log q = -inf.
template <typename T, typename A>
double row_kl(const T* xp, const A* ep, A max_p, A log_sp, double inverse_sp, const T* xq, A max_q, A log_sq,
              int64_t classes) {
  double kl = 0.0;
  for (int64_t i = 0; i < classes; ++i) {
    if (ep[i] == A(0)) continue;
    const A log_p = (widen(xp[i]) - max_p) - log_sp;
    const A log_q = (widen(xq[i]) - max_q) - log_sq;
    kl += static_cast<double>(ep[i]) * inverse_sp * static_cast<double>(log_p - log_q);
  }
  return kl;
}

// The row's maximum, exp(x - max) into `e`, and their sum.
template <typename T, typename A>
std::pair<A, double> exponentials(const T* x, int64_t classes, A* e) {
  A max = -std::numeric_limits<A>::infinity();
  for (int64_t i = 0; i < classes; ++i) max = std::max(max, widen(x[i]));
  double sum = 0.0;
  for (int64_t i = 0; i < classes; ++i) {
    e[i] = std::exp(widen(x[i]) - max);
    sum += static_cast<double>(e[i]);
  }
  return {max, sum};
}

}  // namespace

bool divergence_supported(const Tensor& target_rows, const Tensor& current_rows, const Tensor& valid_rows) {
  const auto type = target_rows.scalar_type();
  const bool floating =
      type == torch::kFloat || type == torch::kDouble || type == torch::kHalf || type == torch::kBFloat16;
  const bool logits_ok = floating && current_rows.scalar_type() == type && target_rows.device().is_cpu() &&
                         current_rows.device().is_cpu() && target_rows.dim() == 2 &&
                         target_rows.is_contiguous() && current_rows.is_contiguous();
  if (!logits_ok || !valid_rows.defined()) return logits_ok;
  return valid_rows.device().is_cpu() && valid_rows.scalar_type() == torch::kBool && valid_rows.dim() == 1 &&
         valid_rows.is_contiguous() && valid_rows.size(0) == target_rows.size(0);
}

RowKl divergence_rows_forward(const Tensor& target_rows, const Tensor& current_rows, const Tensor& valid_rows,
                              bool forward, bool reverse) {
  const int64_t rows = target_rows.size(0), classes = target_rows.size(1);
  const auto out_type = target_rows.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  RowKl out;
  if (forward) out.forward_kl = torch::empty({rows}, torch::TensorOptions().dtype(out_type));
  if (reverse) out.reverse_kl = torch::empty({rows}, torch::TensorOptions().dtype(out_type));
  const bool* valid = valid_rows.defined() ? valid_rows.const_data_ptr<bool>() : nullptr;
  with_type(target_rows.scalar_type(), [&](auto type) {
    using T = decltype(type);
    using A = opmath_t<T>;
    const T* target = target_rows.const_data_ptr<T>();
    const T* current = current_rows.const_data_ptr<T>();
    A* forward_out = forward ? out.forward_kl.data_ptr<A>() : nullptr;
    A* reverse_out = reverse ? out.reverse_kl.data_ptr<A>() : nullptr;
    // Rows of at least ~16K elements a task: a row's work is a few passes
    // over it in cache.
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(classes, 1));
    at::parallel_for(0, rows, grain, [&](int64_t first, int64_t last) {
      std::vector<A> scratch(static_cast<size_t>(2 * classes));
      A* et = scratch.data();
      A* ec = scratch.data() + classes;
      for (int64_t r = first; r < last; ++r) {
        if (valid != nullptr && !valid[r]) {
          if (forward_out != nullptr) forward_out[r] = A(0);
          if (reverse_out != nullptr) reverse_out[r] = A(0);
          continue;
        }
        const T* t = target + r * classes;
        const T* c = current + r * classes;
        const auto [max_t, sum_t] = exponentials(t, classes, et);
        const auto [max_c, sum_c] = exponentials(c, classes, ec);
        const A log_st = static_cast<A>(std::log(sum_t)), log_sc = static_cast<A>(std::log(sum_c));
        if (forward_out != nullptr) {
          forward_out[r] = static_cast<A>(row_kl(t, et, max_t, log_st, 1.0 / sum_t, c, max_c, log_sc, classes));
        }
        if (reverse_out != nullptr) {
          reverse_out[r] = static_cast<A>(row_kl(c, ec, max_c, log_sc, 1.0 / sum_c, t, max_t, log_st, classes));
        }
      }
    });
  });
  return out;
}

std::pair<Tensor, Tensor> divergence_rows_backward(const Tensor& target_rows, const Tensor& current_rows,
                                                   const Tensor& valid_rows, const RowKl& rows,
                                                   const Tensor& row_grads, bool need_target_grad,
                                                   bool need_current_grad) {
  const int64_t count = target_rows.size(0), classes = target_rows.size(1);
  const auto type = target_rows.scalar_type();
  const auto accumulation = type == torch::kDouble ? torch::kDouble : torch::kFloat;
  Tensor target_grad = need_target_grad ? torch::empty_like(target_rows) : Tensor();
  Tensor current_grad = need_current_grad ? torch::empty_like(current_rows) : Tensor();
  if (!need_target_grad && !need_current_grad) return {target_grad, current_grad};
  // The reductions hand in an expanded (stride-0) gradient: materialise it.
  const Tensor weights = row_grads.to(accumulation).contiguous();
  const Tensor forward_kl = rows.forward_kl.defined() ? rows.forward_kl.to(accumulation).contiguous() : Tensor();
  const Tensor reverse_kl = rows.reverse_kl.defined() ? rows.reverse_kl.to(accumulation).contiguous() : Tensor();
  const bool* valid = valid_rows.defined() ? valid_rows.const_data_ptr<bool>() : nullptr;
  with_type(type, [&](auto element) {
    using T = decltype(element);
    using A = opmath_t<T>;
    const T* target = target_rows.const_data_ptr<T>();
    const T* current = current_rows.const_data_ptr<T>();
    T* target_out = need_target_grad ? target_grad.data_ptr<T>() : nullptr;
    T* current_out = need_current_grad ? current_grad.data_ptr<T>() : nullptr;
    const A* weight = weights.const_data_ptr<A>();
    const A* forward = forward_kl.defined() ? forward_kl.const_data_ptr<A>() : nullptr;
    const A* reverse = reverse_kl.defined() ? reverse_kl.const_data_ptr<A>() : nullptr;
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(classes, 1));
    at::parallel_for(0, count, grain, [&](int64_t first, int64_t last) {
      std::vector<A> scratch(static_cast<size_t>(2 * classes));
      A* et = scratch.data();
      A* ec = scratch.data() + classes;
      for (int64_t r = first; r < last; ++r) {
        T* gt_row = target_out != nullptr ? target_out + r * classes : nullptr;
        T* gc_row = current_out != nullptr ? current_out + r * classes : nullptr;
        if (valid != nullptr && !valid[r]) {
          if (gt_row != nullptr) std::fill(gt_row, gt_row + classes, static_cast<T>(0.0f));
          if (gc_row != nullptr) std::fill(gc_row, gc_row + classes, static_cast<T>(0.0f));
          continue;
        }
        const T* t = target + r * classes;
        const T* c = current + r * classes;
        const auto [max_t, sum_t] = exponentials(t, classes, et);
        const auto [max_c, sum_c] = exponentials(c, classes, ec);
        const A log_st = static_cast<A>(std::log(sum_t)), log_sc = static_cast<A>(std::log(sum_c));
        const A inverse_st = static_cast<A>(1.0 / sum_t), inverse_sc = static_cast<A>(1.0 / sum_c);
        const A w = weight[r];
        for (int64_t i = 0; i < classes; ++i) {
          const A pt = et[i] * inverse_st, pc = ec[i] * inverse_sc;
          const A lt = (widen(t[i]) - max_t) - log_st, lc = (widen(c[i]) - max_c) - log_sc;
          A gt = A(0), gc = A(0);
          if (forward != nullptr) {  // KL(p_t || p_c)
            gt += pt == A(0) ? A(0) : pt * ((lt - lc) - forward[r]);
            gc += pc - pt;
          }
          if (reverse != nullptr) {  // KL(p_c || p_t)
            gc += pc == A(0) ? A(0) : pc * ((lc - lt) - reverse[r]);
            gt += pt - pc;
          }
          if (gt_row != nullptr) gt_row[i] = static_cast<T>(gt * w);
          if (gc_row != nullptr) gc_row[i] = static_cast<T>(gc * w);
        }
      }
    });
  });
  return {target_grad, current_grad};
}

}  // namespace tram::ops::cpu_impl
