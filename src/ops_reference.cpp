// ATen reference implementation of tram::ops (include/tram/ops.h).
//
// This is the implementation every device can run and the one the CUDA
// kernels are tested against, so it favours clarity over speed: plain ATen
// ops, temporaries where they keep the formulas readable. Each op validates
// its arguments here and then has one "dispatch point": with TRAM_WITH_CUDA,
// arguments the CUDA kernels take (src/ops_cuda.h says which) go there; CPU
// arguments the fused loops take where they measured faster (src/ops_cpu.h)
// go to those; the rest runs
// the reference (tram::ops::reference, which tests and benchmarks also call
// directly).
#include <tram/ops.h>

#include "ops_cpu.h"
#ifdef TRAM_WITH_CUDA
#include "ops_cuda.h"
#endif

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tram::ops {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ===========================================================================
// Trust-region divergence (docs/ALGORITHMS.md §5)
// ===========================================================================

constexpr const char* kDivergenceOp = "tram::ops::trust_region_divergence: ";

// fp16/bf16 logits are widened to fp32 before the softmax: the divergence of
// two close distributions is a small difference of large log-probabilities.
torch::ScalarType divergence_dtype(const Tensor& target_logits, const Tensor& current_logits) {
  const bool any_double = target_logits.scalar_type() == torch::kDouble ||
                          current_logits.scalar_type() == torch::kDouble;
  return any_double ? torch::kDouble : torch::kFloat;
}

bool uses_forward_kl(Divergence divergence) { return divergence != Divergence::kReverse; }
bool uses_reverse_kl(Divergence divergence) { return divergence != Divergence::kForward; }

// The per-row KL terms of one divergence, [rows] each, in the accumulation
// dtype, masked rows exactly 0. Only the terms the divergence needs are
// defined; the backward needs each one separately (its own row constant).
struct RowDivergences {
  Tensor forward_kl;  // KL(p_target || p_current)
  Tensor reverse_kl;  // KL(p_current || p_target)
  // Per-row log-softmax statistics saved by the CUDA forward for its
  // backward; undefined when the reference computed the rows.
  Tensor statistics;

  Tensor total() const {
    if (forward_kl.defined() && reverse_kl.defined()) return forward_kl + reverse_kl;
    return forward_kl.defined() ? forward_kl : reverse_kl;
  }
};

// Rows excluded by the mask may hold NaN or inf; `where` (unlike multiplying
// by the mask) keeps them out of the result.
Tensor zero_masked_rows(const Tensor& per_row, const Tensor& valid_rows) {
  if (!valid_rows.defined()) return per_row;
  const Tensor valid = per_row.dim() == valid_rows.dim() ? valid_rows : valid_rows.unsqueeze(-1);
  return torch::where(valid, per_row, torch::zeros({}, per_row.options()));
}

// sum_c p (log p - log q) per row. A class with p = 0 contributes 0 (the
// limit of p log p), also where log q = -inf too, which would otherwise give
// 0 * NaN.
Tensor kl_per_row(const Tensor& log_p, const Tensor& log_q) {
  const Tensor p = log_p.exp();
  const Tensor terms = torch::where(p == 0, torch::zeros({}, p.options()), p * (log_p - log_q));
  return terms.sum(-1);
}

// Gradients of one row KL(p || q) = sum_c p (log p - log q) with respect to
// the logits of p and of q, given the row value:
//   dKL/dz_p = p * ((log p - log q) - KL)   (0 where p = 0)
//   dKL/dz_q = q - p
// These closed forms are what the CUDA backward kernel implements.
std::pair<Tensor, Tensor> kl_logit_gradients(const Tensor& log_p, const Tensor& log_q,
                                             const Tensor& kl_rows) {
  const Tensor p = log_p.exp();
  const Tensor q = log_q.exp();
  const Tensor wrt_p_logits = torch::where(p == 0, torch::zeros({}, p.options()),
                                           p * ((log_p - log_q) - kl_rows.unsqueeze(-1)));
  return {wrt_p_logits, q - p};
}

RowDivergences reference_divergence_rows_forward(const Tensor& target_rows,
                                                 const Tensor& current_rows,
                                                 const Tensor& valid_rows, Divergence divergence) {
  const auto dtype = divergence_dtype(target_rows, current_rows);
  const Tensor log_p_target = torch::log_softmax(target_rows.to(dtype), -1);
  const Tensor log_p_current = torch::log_softmax(current_rows.to(dtype), -1);
  RowDivergences rows;
  if (uses_forward_kl(divergence)) {
    rows.forward_kl = zero_masked_rows(kl_per_row(log_p_target, log_p_current), valid_rows);
  }
  if (uses_reverse_kl(divergence)) {
    rows.reverse_kl = zero_masked_rows(kl_per_row(log_p_current, log_p_target), valid_rows);
  }
  return rows;
}

// Returns the gradients with respect to target_rows and current_rows (in
// their dtypes) given dLoss/dD per row (`row_grads`, [rows]).
std::pair<Tensor, Tensor> reference_divergence_rows_backward(const Tensor& target_rows,
                                                             const Tensor& current_rows,
                                                             const Tensor& valid_rows,
                                                             const RowDivergences& rows,
                                                             const Tensor& row_grads) {
  const auto dtype = divergence_dtype(target_rows, current_rows);
  // Recomputed rather than saved: saving two [rows, classes] fp32 tensors
  // would cost more memory than the logits themselves for fp16 models.
  const Tensor log_p_target = torch::log_softmax(target_rows.to(dtype), -1);
  const Tensor log_p_current = torch::log_softmax(current_rows.to(dtype), -1);
  Tensor wrt_target = torch::zeros_like(log_p_target);
  Tensor wrt_current = torch::zeros_like(log_p_current);
  if (rows.forward_kl.defined()) {
    auto [wrt_p, wrt_q] = kl_logit_gradients(log_p_target, log_p_current, rows.forward_kl);
    wrt_target += wrt_p;
    wrt_current += wrt_q;
  }
  if (rows.reverse_kl.defined()) {
    auto [wrt_p, wrt_q] = kl_logit_gradients(log_p_current, log_p_target, rows.reverse_kl);
    wrt_current += wrt_p;
    wrt_target += wrt_q;
  }
  const Tensor weights = row_grads.to(dtype).unsqueeze(-1);
  return {zero_masked_rows(wrt_target * weights, valid_rows).to(target_rows.scalar_type()),
          zero_masked_rows(wrt_current * weights, valid_rows).to(current_rows.scalar_type())};
}

// Dispatch point (`reference_only`: tram::ops::reference, which takes the reference everywhere).
RowDivergences divergence_rows_forward(const Tensor& target_rows, const Tensor& current_rows,
                                       const Tensor& valid_rows, Divergence divergence, bool reference_only) {
  if (reference_only) return reference_divergence_rows_forward(target_rows, current_rows, valid_rows, divergence);
#ifdef TRAM_WITH_CUDA
  if (cuda_impl::divergence_supported(target_rows, current_rows, valid_rows)) {
    cuda_impl::RowKl rows =
        cuda_impl::divergence_rows_forward(target_rows, current_rows, valid_rows,
                                           uses_forward_kl(divergence), uses_reverse_kl(divergence));
    return {rows.forward_kl, rows.reverse_kl, rows.statistics};
  }
#endif
  return reference_divergence_rows_forward(target_rows, current_rows, valid_rows, divergence);
}

// Dispatch point. The gradients that are not needed may be left undefined.
std::pair<Tensor, Tensor> divergence_rows_backward(const Tensor& target_rows,
                                                   const Tensor& current_rows,
                                                   const Tensor& valid_rows,
                                                   const RowDivergences& rows,
                                                   const Tensor& row_grads, bool need_target_grad,
                                                   bool need_current_grad, bool reference_only) {
#ifdef TRAM_WITH_CUDA
  if (rows.statistics.defined()) {  // the CUDA forward computed the rows
    return cuda_impl::divergence_rows_backward(
        target_rows, current_rows, valid_rows, {rows.forward_kl, rows.reverse_kl, rows.statistics},
        row_grads, need_target_grad, need_current_grad);
  }
#endif
  (void)need_target_grad;
  (void)need_current_grad;
  (void)reference_only;  // the reference forward leaves no statistics: the reference backward
  return reference_divergence_rows_backward(target_rows, current_rows, valid_rows, rows, row_grads);
}

// Logits [rows, classes] -> per-row divergences [rows] without a
// `reduction_weight`, else reduction_weight * (sum over rows), a 0-dim tensor.
// Every scalar reduction is such a weighted sum, so one backward covers them
// all. The optional tensors are std::optional because autograd cannot take
// undefined tensors as inputs.
class DivergenceFunction : public torch::autograd::Function<DivergenceFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& target_rows, const Tensor& current_rows,
                        const std::optional<Tensor>& mask_rows,
                        const std::optional<Tensor>& reduction_weight_or_none,
                        Divergence divergence, bool reference_only) {
    const Tensor valid_rows = mask_rows.value_or(Tensor());
    const Tensor reduction_weight = reduction_weight_or_none.value_or(Tensor());
    const RowDivergences rows =
        divergence_rows_forward(target_rows, current_rows, valid_rows, divergence, reference_only);
    ctx->save_for_backward({target_rows, current_rows, valid_rows, reduction_weight,
                            rows.forward_kl, rows.reverse_kl, rows.statistics});
    ctx->saved_data["reference_only"] = reference_only;
    const Tensor per_row = rows.total();
    return reduction_weight.defined() ? per_row.sum() * reduction_weight : per_row;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& target_rows = saved[0];
    const Tensor& current_rows = saved[1];
    const Tensor& valid_rows = saved[2];
    const Tensor& reduction_weight = saved[3];
    const RowDivergences rows{saved[4], saved[5], saved[6]};
    const Tensor& grad_output = grad_outputs[0];
    const Tensor row_grads = reduction_weight.defined()
                                 ? (grad_output * reduction_weight).expand({target_rows.size(0)})
                                 : grad_output;
    auto [wrt_target, wrt_current] =
        divergence_rows_backward(target_rows, current_rows, valid_rows, rows, row_grads,
                                 ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                 ctx->saved_data["reference_only"].toBool());
    return {ctx->needs_input_grad(0) ? wrt_target : Tensor(),
            ctx->needs_input_grad(1) ? wrt_current : Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

void check_logits(const Tensor& logits, const char* name) {
  TORCH_CHECK(logits.defined(), kDivergenceOp, name,
              " is undefined; pass a tensor of logits of shape [..., classes]");
  TORCH_CHECK(logits.layout() == torch::kStrided, kDivergenceOp, name,
              " must be a dense tensor, got layout ", logits.layout(), "; call .to_dense() first");
  TORCH_CHECK(logits.is_floating_point(), kDivergenceOp, name,
              " must be floating point (fp32, fp16, bf16 or fp64), got ", logits.scalar_type(),
              "; convert it with .to(torch::kFloat)");
  TORCH_CHECK(logits.dim() >= 1, kDivergenceOp, name,
              " is 0-dim; logits need a last dimension indexing the classes, shape [..., classes]");
  TORCH_CHECK(logits.size(-1) > 0, kDivergenceOp, name, " has zero classes (shape ", logits.sizes(),
              "); the last dimension must index at least one class");
}

// The mask as a [rows] bool tensor (nonzero = valid), or undefined.
Tensor valid_rows_from_mask(const Tensor& mask, const Tensor& logits) {
  if (!mask.defined()) return mask;
  const auto row_shape = logits.sizes().slice(0, logits.dim() - 1);
  TORCH_CHECK(mask.sizes() == row_shape, kDivergenceOp, "mask has shape ", mask.sizes(),
              " but the logits ", logits.sizes(), " have rows of shape ", row_shape,
              "; pass one mask entry per prediction row (the logits' shape without the class "
              "dimension)");
  TORCH_CHECK(mask.device() == logits.device(), kDivergenceOp, "mask is on ", mask.device(),
              " but the logits are on ", logits.device(), "; move the mask to the logits' device");
  TORCH_CHECK(mask.layout() == torch::kStrided, kDivergenceOp,
              "mask must be a dense tensor, got layout ", mask.layout());
  TORCH_CHECK(!mask.is_complex(), kDivergenceOp, "mask must be bool or real, got ",
              mask.scalar_type());
  return mask.reshape({-1}).to(torch::kBool);
}

// The factor that turns the sum over valid rows into `reduction`, as a 0-dim
// tensor (undefined for kNone). Computed on the device so that kMean with a
// mask needs no device-to-host synchronisation.
Tensor reduction_weight(Reduction reduction, const Tensor& valid_rows, const Tensor& logits,
                        const torch::TensorOptions& options) {
  const int64_t rows = logits.numel() / logits.size(-1);
  switch (reduction) {
    case Reduction::kNone: return Tensor();
    case Reduction::kSum: return torch::ones({}, options);
    case Reduction::kMean:
      if (valid_rows.defined()) {
        // With no valid row the sum is 0, so clamping the count gives 0, not NaN.
        return valid_rows.sum().clamp_min(1).to(options.dtype()).reciprocal();
      }
      return torch::full({}, rows > 0 ? 1.0 / static_cast<double>(rows) : 0.0, options);
    case Reduction::kLegacy: {
      // The released code divided by rows x classes (F.kl_div "mean") and then
      // by x.size(0); 1-D logits are a single row, i.e. a batch of one.
      const double batch = logits.dim() >= 2 ? static_cast<double>(logits.size(0)) : 1.0;
      const double numel = static_cast<double>(logits.numel());
      return torch::full({}, numel > 0 ? 1.0 / (numel * batch) : 0.0, options);
    }
  }
  TORCH_CHECK(false, kDivergenceOp, "unknown reduction ", static_cast<int>(reduction));
}

// ===========================================================================
// Multi-tensor ascent (docs/ALGORITHMS.md §2)
// ===========================================================================

bool uses_eta(Scaling scaling) {
  return scaling != Scaling::kIdentity && scaling != Scaling::kReleasedIdentity;
}

void check_float_tensor(const char* op, const char* list, size_t i, const Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", list, "[", i,
              "] is undefined; leave tensors without a gradient out of every list");
  TORCH_CHECK(t.layout() == torch::kStrided, op, ": ", list, "[", i,
              "] must be a dense tensor, got layout ", t.layout(),
              "; sparse gradients are not supported");
  TORCH_CHECK(t.is_floating_point(), op, ": ", list, "[", i,
              "] must be floating point (fp32, fp16, bf16 or fp64), got ", t.scalar_type());
}

// `other[i]` must match `reference[i]` in shape, dtype and device: the ops
// combine them element-wise and write without conversion.
void check_parallel_lists(const char* op, const char* reference_name, torch::TensorList reference,
                          const char* other_name, torch::TensorList other) {
  TORCH_CHECK(reference.size() == other.size(), op, ": ", reference_name, " has ", reference.size(),
              " tensors but ", other_name, " has ", other.size(),
              "; pass parallel lists of the same length");
  for (size_t i = 0; i < reference.size(); ++i) {
    check_float_tensor(op, reference_name, i, reference[i]);
    check_float_tensor(op, other_name, i, other[i]);
    TORCH_CHECK(reference[i].sizes() == other[i].sizes(), op, ": ", reference_name, "[", i,
                "] has shape ", reference[i].sizes(), " but ", other_name, "[", i, "] has shape ",
                other[i].sizes(), "; the lists must pair tensors of equal shapes");
    TORCH_CHECK(reference[i].scalar_type() == other[i].scalar_type(), op, ": ", reference_name, "[",
                i, "] is ", reference[i].scalar_type(), " but ", other_name, "[", i, "] is ",
                other[i].scalar_type(), "; the paired tensors must have the same dtype");
    TORCH_CHECK(reference[i].device() == other[i].device(), op, ": ", reference_name, "[", i,
                "] is on ", reference[i].device(), " but ", other_name, "[", i, "] is on ",
                other[i].device(), "; the paired tensors must be on the same device");
  }
}

void check_per_tensor_values(const char* op, const char* field, const std::vector<double>& values,
                             size_t tensors) {
  TORCH_CHECK(values.size() == tensors, op, ": spec.", field, " has ", values.size(),
              " values but there are ", tensors, " tensors; give one ", field, " per tensor");
}

void check_spec(const char* op, const AscentSpec& spec, size_t tensors, bool needs_coef) {
  // A value the scaling does not use may be left out, but a list of the wrong
  // length is a caller bug either way.
  if (uses_eta(spec.scaling) || !spec.eta.empty()) {
    check_per_tensor_values(op, "eta", spec.eta, tensors);
  }
  if (needs_coef || !spec.coef.empty()) {
    check_per_tensor_values(op, "coef", spec.coef, tensors);
  }
}

// Foreach kernels take tensors of one device and dtype; the groups are lists
// of indices into the caller's lists.
std::vector<std::vector<size_t>> group_by_device_and_dtype(torch::TensorList tensors) {
  std::map<std::pair<std::string, torch::ScalarType>, std::vector<size_t>> groups;
  for (size_t i = 0; i < tensors.size(); ++i) {
    groups[{tensors[i].device().str(), tensors[i].scalar_type()}].push_back(i);
  }
  std::vector<std::vector<size_t>> indices;
  for (auto& entry : groups) indices.push_back(std::move(entry.second));
  return indices;
}

std::vector<Tensor> pick(torch::TensorList tensors, const std::vector<size_t>& indices) {
  std::vector<Tensor> picked;
  picked.reserve(indices.size());
  for (size_t i : indices) picked.push_back(tensors[i]);
  return picked;
}

std::vector<torch::Scalar> pick(const std::vector<double>& values,
                                const std::vector<size_t>& indices) {
  std::vector<torch::Scalar> picked;
  picked.reserve(indices.size());
  for (size_t i : indices) picked.emplace_back(values[i]);
  return picked;
}

// fp16/bf16 math runs in fp32 and rounds once, when the result is written (as
// PyTorch's fused optimizers do). Wider dtypes are returned as they are, so
// the caller must not modify the result in place.
std::vector<Tensor> to_opmath(std::vector<Tensor> tensors) {
  for (Tensor& t : tensors) {
    if (t.scalar_type() == torch::kHalf || t.scalar_type() == torch::kBFloat16) {
      t = t.to(torch::kFloat);
    }
  }
  return tensors;
}

// T = |w| + eta
std::vector<Tensor> adaptive_scale(const std::vector<Tensor>& w,
                                   torch::ArrayRef<torch::Scalar> eta) {
  std::vector<Tensor> scale = torch::_foreach_abs(w);
  torch::_foreach_add_(scale, eta);
  return scale;
}

// f = 1 + eta g^2
std::vector<Tensor> fisher_damping(const std::vector<Tensor>& g,
                                   torch::ArrayRef<torch::Scalar> eta) {
  std::vector<Tensor> damping = torch::_foreach_mul(g, g);
  torch::_foreach_mul_(damping, eta);
  torch::_foreach_add_(damping, 1.0);
  return damping;
}

// The tensors whose summed squared L2 norm is the ascent's squared norm:
// g (identity), T g (adaptive), g / sqrt(f) (Fisher: sum g^2 / f).
std::vector<Tensor> norm_operands(Scaling scaling, const std::vector<Tensor>& w,
                                  const std::vector<Tensor>& g,
                                  torch::ArrayRef<torch::Scalar> eta) {
  switch (scaling) {
    case Scaling::kIdentity:
    case Scaling::kReleasedIdentity: return g;
    case Scaling::kAdaptive:
    case Scaling::kReleasedAdaptive: {
      std::vector<Tensor> scaled = adaptive_scale(w, eta);
      torch::_foreach_mul_(scaled, g);
      return scaled;
    }
    case Scaling::kFisher: {
      std::vector<Tensor> damping = fisher_damping(g, eta);
      torch::_foreach_sqrt_(damping);
      return torch::_foreach_div(g, damping);
    }
  }
  TORCH_CHECK(false, "tram::ops: unknown scaling ", static_cast<int>(scaling));
}

// e = coef * direction(w, g), as new tensors.
std::vector<Tensor> perturbation(Scaling scaling, const std::vector<Tensor>& w,
                                 const std::vector<Tensor>& g, torch::ArrayRef<torch::Scalar> eta,
                                 torch::ArrayRef<torch::Scalar> coef) {
  std::vector<Tensor> e;
  switch (scaling) {
    case Scaling::kIdentity:  // g
      e = torch::_foreach_mul(g, coef);
      return e;
    case Scaling::kAdaptive:          // T^2 g
    case Scaling::kReleasedAdaptive:  // T^2: the released code never multiplies by g
      e = adaptive_scale(w, eta);
      torch::_foreach_mul_(e, e);
      if (scaling == Scaling::kAdaptive) torch::_foreach_mul_(e, g);
      break;
    case Scaling::kFisher:  // g / f
      e = torch::_foreach_div(g, fisher_damping(g, eta));
      break;
    case Scaling::kReleasedIdentity:  // 1: every element moves by coef
      for (size_t i = 0; i < w.size(); ++i) e.push_back(torch::full_like(w[i], coef[i]));
      return e;
  }
  torch::_foreach_mul_(e, coef);
  return e;
}

// out[i] = sources[i] + coef[i] * direction(sources[i], grads[i]). `out` may
// alias `sources`: the perturbation is complete before anything is written.
void ascend_into(torch::TensorList out, torch::TensorList sources, torch::TensorList grads,
                 const AscentSpec& spec) {
  for (const auto& group : group_by_device_and_dtype(out)) {
    const std::vector<Tensor> w = to_opmath(pick(sources, group));
    const std::vector<Tensor> g = to_opmath(pick(grads, group));
    const std::vector<torch::Scalar> eta =
        uses_eta(spec.scaling) ? pick(spec.eta, group) : std::vector<torch::Scalar>();
    std::vector<Tensor> shifted = perturbation(spec.scaling, w, g, eta, pick(spec.coef, group));
    torch::_foreach_add_(shifted, w);
    torch::_foreach_copy_(pick(out, group), shifted);
  }
}

void copy_exact(torch::TensorList dst, torch::TensorList src) {
  for (const auto& group : group_by_device_and_dtype(dst)) {
    torch::_foreach_copy_(pick(dst, group), pick(src, group));
  }
}

}  // namespace

// ===========================================================================
// Public entry points
// ===========================================================================

namespace {
Tensor divergence_of(const Tensor& target_logits, const Tensor& current_logits, Divergence divergence,
                     Reduction reduction, const Tensor& mask, bool reference_only) {
  check_logits(target_logits, "target_logits");
  check_logits(current_logits, "current_logits");
  TORCH_CHECK(target_logits.sizes() == current_logits.sizes(), kDivergenceOp,
              "target_logits has shape ", target_logits.sizes(), " but current_logits has shape ",
              current_logits.sizes(), "; both must be logits of the same batch, [..., classes]");
  TORCH_CHECK(target_logits.device() == current_logits.device(), kDivergenceOp,
              "target_logits is on ", target_logits.device(), " but current_logits is on ",
              current_logits.device(), "; move both to one device");
  const Tensor valid_rows = valid_rows_from_mask(mask, current_logits);
  const auto options =
      current_logits.options().dtype(divergence_dtype(target_logits, current_logits));
  const Tensor weight = reduction_weight(reduction, valid_rows, current_logits, options);
  const int64_t classes = current_logits.size(-1);
  const auto optional = [](const Tensor& t) {
    return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
  };
  const Tensor per_row_or_reduced = DivergenceFunction::apply(
      target_logits.reshape({-1, classes}), current_logits.reshape({-1, classes}),
      optional(valid_rows), optional(weight), divergence, reference_only);
  if (reduction != Reduction::kNone) return per_row_or_reduced;
  return per_row_or_reduced.reshape(current_logits.sizes().slice(0, current_logits.dim() - 1));
}
}  // namespace

torch::Tensor trust_region_divergence(const torch::Tensor& target_logits, const torch::Tensor& current_logits,
                                      Divergence divergence, Reduction reduction, const torch::Tensor& mask) {
  return divergence_of(target_logits, current_logits, divergence, reduction, mask, /*reference_only=*/false);
}

torch::Tensor reference::trust_region_divergence(const torch::Tensor& target_logits,
                                                 const torch::Tensor& current_logits, Divergence divergence,
                                                 Reduction reduction, const torch::Tensor& mask) {
  return divergence_of(target_logits, current_logits, divergence, reduction, mask, /*reference_only=*/true);
}

// --- Multi-tensor ops: validation, then the dispatch point, then the reference.

namespace {
void check_squared_norm(const char* op, torch::TensorList params, torch::TensorList grads, const AscentSpec& spec) {
  check_parallel_lists(op, "params", params, "grads", grads);
  check_spec(op, spec, params.size(), /*needs_coef=*/false);
}
void check_ascend_with_backup(const char* op, torch::TensorList params, torch::TensorList grads,
                              torch::TensorList backups, const AscentSpec& spec) {
  check_parallel_lists(op, "params", params, "grads", grads);
  check_parallel_lists(op, "params", params, "backups", backups);
  check_spec(op, spec, params.size(), /*needs_coef=*/true);
}
void check_ascend_from(const char* op, torch::TensorList params, torch::TensorList sources, torch::TensorList grads,
                       const AscentSpec& spec) {
  check_parallel_lists(op, "params", params, "sources", sources);
  check_parallel_lists(op, "params", params, "grads", grads);
  check_spec(op, spec, params.size(), /*needs_coef=*/true);
}
}  // namespace

namespace reference {

torch::Tensor squared_norm(torch::TensorList params, torch::TensorList grads, const AscentSpec& spec) {
  check_squared_norm("tram::ops::reference::squared_norm", params, grads, spec);
  if (params.empty()) return torch::zeros({}, torch::kFloat);
  torch::NoGradGuard no_grad;
  const bool any_double = std::any_of(params.begin(), params.end(), [](const Tensor& p) {
    return p.scalar_type() == torch::kDouble;
  });
  const auto result_options =
      params[0].options().dtype(any_double ? torch::kDouble : torch::kFloat);
  Tensor total = torch::zeros({}, result_options);
  for (const auto& group : group_by_device_and_dtype(params)) {
    const std::vector<Tensor> w = to_opmath(pick(params, group));
    const std::vector<Tensor> g = to_opmath(pick(grads, group));
    const std::vector<torch::Scalar> eta =
        uses_eta(spec.scaling) ? pick(spec.eta, group) : std::vector<torch::Scalar>();
    const std::vector<Tensor> per_tensor =
        torch::_foreach_powsum(norm_operands(spec.scaling, w, g, eta), 2);
    total += torch::stack(per_tensor).sum().to(result_options);
  }
  return total;
}

void ascend_with_backup(torch::TensorList params, torch::TensorList grads, torch::TensorList backups,
                        const AscentSpec& spec) {
  check_ascend_with_backup("tram::ops::reference::ascend_with_backup", params, grads, backups, spec);
  // Parameters are leaves that require grad; like an optimizer step, the
  // ascent is not part of any graph.
  torch::NoGradGuard no_grad;
  copy_exact(backups, params);
  // Reading w from the backup keeps params write-only here.
  ascend_into(params, backups, grads, spec);
}

void ascend_from(torch::TensorList params, torch::TensorList sources, torch::TensorList grads,
                 const AscentSpec& spec) {
  check_ascend_from("tram::ops::reference::ascend_from", params, sources, grads, spec);
  torch::NoGradGuard no_grad;
  ascend_into(params, sources, grads, spec);
}

void copy(torch::TensorList dst, torch::TensorList src) {
  check_parallel_lists("tram::ops::reference::copy", "dst", dst, "src", src);
  torch::NoGradGuard no_grad;
  copy_exact(dst, src);
}

void swap(torch::TensorList a, torch::TensorList b) {
  check_parallel_lists("tram::ops::reference::swap", "a", a, "b", b);
  torch::NoGradGuard no_grad;
  // One temporary at a time: the swap exists to save a parameter copy.
  for (size_t i = 0; i < a.size(); ++i) {
    const Tensor a_before = a[i].clone();
    a[i].copy_(b[i]);
    b[i].copy_(a_before);
  }
}

torch::Tensor squared_distance(torch::TensorList a, torch::TensorList b) {
  check_parallel_lists("tram::ops::reference::squared_distance", "a", a, "b", b);
  if (a.empty()) return torch::zeros({}, torch::kDouble);
  torch::NoGradGuard no_grad;
  const auto options = a[0].options().dtype(torch::kDouble);
  Tensor total = torch::zeros({}, options);
  for (const auto& group : group_by_device_and_dtype(a)) {
    const std::vector<Tensor> difference =
        torch::_foreach_sub(to_opmath(pick(a, group)), to_opmath(pick(b, group)));
    for (const Tensor& d : difference) total += d.to(torch::kDouble).square().sum().to(options);
  }
  return total;
}

}  // namespace reference

torch::Tensor squared_norm(torch::TensorList params, torch::TensorList grads,
                           const AscentSpec& spec) {
  check_squared_norm("tram::ops::squared_norm", params, grads, spec);
  if (params.empty()) return torch::zeros({}, torch::kFloat);
  torch::NoGradGuard no_grad;
#ifdef TRAM_WITH_CUDA
  if (cuda_impl::multi_tensor_supported({params, grads})) {  // dispatch point
    return cuda_impl::squared_norm(params, grads, spec);
  }
#endif
  if (cpu_impl::takes_norm_scaling(spec.scaling) && cpu_impl::supported({params, grads})) {
    return cpu_impl::squared_norm(params, grads, spec);
  }
  return reference::squared_norm(params, grads, spec);
}

void ascend_with_backup(torch::TensorList params, torch::TensorList grads,
                        torch::TensorList backups, const AscentSpec& spec) {
  check_ascend_with_backup("tram::ops::ascend_with_backup", params, grads, backups, spec);
  torch::NoGradGuard no_grad;
#ifdef TRAM_WITH_CUDA
  if (cuda_impl::multi_tensor_supported({params, grads, backups})) {  // dispatch point
    return cuda_impl::ascend_with_backup(params, grads, backups, spec);
  }
#endif
  if (cpu_impl::supported({params, grads, backups})) {
    return cpu_impl::ascend_with_backup(params, grads, backups, spec);
  }
  reference::ascend_with_backup(params, grads, backups, spec);
}

void ascend_from(torch::TensorList params, torch::TensorList sources, torch::TensorList grads,
                 const AscentSpec& spec) {
  check_ascend_from("tram::ops::ascend_from", params, sources, grads, spec);
  torch::NoGradGuard no_grad;
#ifdef TRAM_WITH_CUDA
  if (cuda_impl::multi_tensor_supported({params, sources, grads})) {  // dispatch point
    return cuda_impl::ascend_from(params, sources, grads, spec);
  }
#endif
  if (cpu_impl::supported({params, sources, grads})) {
    return cpu_impl::ascend_from(params, sources, grads, spec);
  }
  reference::ascend_from(params, sources, grads, spec);
}

void copy(torch::TensorList dst, torch::TensorList src) {
  check_parallel_lists("tram::ops::copy", "dst", dst, "src", src);
  torch::NoGradGuard no_grad;
#ifdef TRAM_WITH_CUDA
  if (cuda_impl::multi_tensor_supported({dst, src})) return cuda_impl::copy(dst, src);  // dispatch point
#endif
  // ATen's copy is one pass already (vectorised, parallel): no CPU path of its own.
  copy_exact(dst, src);
}

void swap(torch::TensorList a, torch::TensorList b) {
  check_parallel_lists("tram::ops::swap", "a", a, "b", b);
  torch::NoGradGuard no_grad;
#ifdef TRAM_WITH_CUDA
  if (cuda_impl::multi_tensor_supported({a, b})) return cuda_impl::swap(a, b);  // dispatch point
#endif
  if (cpu_impl::takes_swap(a) && cpu_impl::supported({a, b})) return cpu_impl::swap(a, b);
  reference::swap(a, b);
}

torch::Tensor squared_distance(torch::TensorList a, torch::TensorList b) {
  check_parallel_lists("tram::ops::squared_distance", "a", a, "b", b);
  if (a.empty()) return torch::zeros({}, torch::kDouble);
  torch::NoGradGuard no_grad;
  // No CUDA kernel of its own yet: on a GPU, the reference's foreach ops.
  if (cpu_impl::supported({a, b})) return cpu_impl::squared_distance(a, b);
  return reference::squared_distance(a, b);
}

}  // namespace tram::ops
