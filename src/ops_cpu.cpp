// Fused CPU implementations of the multi-tensor ops (see ops_cpu.h).
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

bool takes_norm_scaling(Scaling scaling) {
  return scaling == Scaling::kAdaptive || scaling == Scaling::kReleasedAdaptive || scaling == Scaling::kFisher;
}

bool takes_swap(torch::TensorList a) {
  return std::all_of(a.begin(), a.end(), [](const Tensor& t) {
    return t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kDouble;
  });
}

namespace {
// body(block index, block, scaling, T{}, eta, coef) for every block of
// `blocks` (of `params`), with the scaling and the element type as
// compile-time constants and the block's tensor's eta and coef in its
// accumulation type (0 where the spec leaves them out).
template <typename Body>
void for_each_ascent_block(torch::TensorList params, const std::vector<Block>& blocks, const AscentSpec& spec,
                           const Body& body) {
  with_scaling(spec.scaling, [&](auto scaling) {
    for_each_block(blocks, [&](size_t b, const Block& block) {
      with_type(params[block.tensor].scalar_type(), [&](auto type) {
        using A = opmath_t<decltype(type)>;
        const size_t k = block.tensor;
        const A eta = static_cast<A>(spec.eta.empty() ? 0.0 : spec.eta[k]);
        const A coef = static_cast<A>(spec.coef.empty() ? 0.0 : spec.coef[k]);
        body(b, block, scaling, type, eta, coef);
      });
    });
  });
}
}  // namespace

Tensor squared_norm(torch::TensorList params, torch::TensorList grads, const AscentSpec& spec) {
  const std::vector<Block> blocks = blocks_of(params);
  std::vector<double> partials(blocks.size(), 0.0);
  for_each_ascent_block(params, blocks, spec, [&](size_t b, const Block& block, auto scaling, auto type, auto eta, auto) {
    using T = decltype(type);
    const T* w = params[block.tensor].const_data_ptr<T>();
    const T* g = grads[block.tensor].const_data_ptr<T>();
    partials[b] = sum_of_squares(block.begin, block.end, [&](int64_t i) {
      return norm_term<decltype(scaling)::value>(widen(w[i]), widen(g[i]), eta);
    });
  });
  bool any_double = false;
  for (const Tensor& p : params) any_double = any_double || p.scalar_type() == torch::kDouble;
  return scalar_tensor(sum_in_order(partials), any_double ? torch::kDouble : torch::kFloat);
}

void ascend_with_backup(torch::TensorList params, torch::TensorList grads, torch::TensorList backups,
                        const AscentSpec& spec) {
  for_each_ascent_block(params, blocks_of(params), spec,
                        [&](size_t, const Block& block, auto scaling, auto type, auto eta, auto coef) {
    using T = decltype(type);
    T* w = params[block.tensor].data_ptr<T>();
    const T* g = grads[block.tensor].const_data_ptr<T>();
    T* backup = backups[block.tensor].data_ptr<T>();
    for (int64_t i = block.begin; i < block.end; ++i) {
      const T before = w[i];
      backup[i] = before;
      w[i] = static_cast<T>(ascended<decltype(scaling)::value>(widen(before), widen(g[i]), eta, coef));
    }
  });
  mark_modified(params);
  mark_modified(backups);
}

void ascend_from(torch::TensorList params, torch::TensorList sources, torch::TensorList grads,
                 const AscentSpec& spec) {
  for_each_ascent_block(params, blocks_of(params), spec,
                        [&](size_t, const Block& block, auto scaling, auto type, auto eta, auto coef) {
    using T = decltype(type);
    // `params` may alias `sources`: each element is read before it is written.
    T* w = params[block.tensor].data_ptr<T>();
    const T* source = sources[block.tensor].const_data_ptr<T>();
    const T* g = grads[block.tensor].const_data_ptr<T>();
    for (int64_t i = block.begin; i < block.end; ++i) {
      w[i] = static_cast<T>(ascended<decltype(scaling)::value>(widen(source[i]), widen(g[i]), eta, coef));
    }
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

}  // namespace tram::ops::cpu_impl
