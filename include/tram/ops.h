// tram::ops — the fused operations the optimizers are built from.
//
// Every operation has an ATen reference implementation that is always built
// and tested (also callable directly, tram::ops::reference below). A CUDA
// implementation is dispatched to when the inputs live on a CUDA device and
// tram was built with TRAM_WITH_CUDA, and contiguous CPU tensors take fused
// CPU loops (one pass over memory, no temporaries) for the multi-tensor ops
// where those measured faster than the reference (src/ops_cpu.h); both must
// match the reference (tests/cuda, tests/test_ops_cpu.cpp). The optimizers call these functions only, never a
// particular implementation.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace tram::ops {

// ---------------------------------------------------------------------------
// Trust-region divergence between two predictive distributions
// (docs/ALGORITHMS.md §5).
// ---------------------------------------------------------------------------

// Which KL between p_target = softmax(target_logits) and
// p_current = softmax(current_logits), per prediction row.
enum class Divergence {
  kForward,    // KL(p_target || p_current) = sum_c p_t (log p_t - log p_c)
  kReverse,    // KL(p_current || p_target)
  kSymmetric,  // forward + reverse
};

// How per-row divergences become the result.
enum class Reduction {
  kNone,    // one value per row, shape = logits.shape[:-1]; masked rows are 0
  kMean,    // sum over valid rows / number of valid rows (0 when none is valid)
  kSum,     // sum over valid rows
  kLegacy,  // the released TRAM code: sum over valid rows / numel(logits) / size(0)
};

// Divergence of two logit tensors of the same shape [..., classes]
// (e.g. [rows, classes] or [batch, seq, vocab]), any floating dtype
// (fp32/fp16/bf16/fp64). Accumulates in fp32 (fp64 for fp64 inputs) using
// log-sum-exp: never log(softmax). `mask`, when defined, has shape
// logits.shape[:-1] (bool, or any dtype where nonzero = valid) and excludes
// rows such as padding. A row whose logits contain -inf entries is fine
// (those classes have probability 0); a masked row may hold anything.
// The two tensors may differ in dtype (e.g. an fp32 target and bf16 current
// logits). 1-D logits are one row. The result is fp32 (fp64 when either input
// is fp64) and differentiable with respect to both logit tensors (used by the
// TRPO/R3F/MESA regularizers).
torch::Tensor trust_region_divergence(const torch::Tensor& target_logits,
                                      const torch::Tensor& current_logits,
                                      Divergence divergence = Divergence::kForward,
                                      Reduction reduction = Reduction::kMean,
                                      const torch::Tensor& mask = {});

// ---------------------------------------------------------------------------
// Multi-tensor ascent (docs/ALGORITHMS.md §2). One call covers every managed
// parameter.
// ---------------------------------------------------------------------------

// The direction family of the perturbation e = coef * direction(w, g).
enum class Scaling {
  kIdentity,  // SAM:    squared norm sum g^2;               direction g
  kAdaptive,  // ASAM:   squared norm sum (T g)^2, T=|w|+eta; direction T^2 g
  kFisher,    // FSAM:   squared norm sum g^2 / f, f=1+eta g^2; direction g / f
  kReleasedIdentity,  // released TRAM code: squared norm sum g^2;       direction 1
  kReleasedAdaptive,  // released TRAM code: squared norm sum (T g)^2;   direction T^2
};

// Per-tensor parameters of the ascent. `eta[i]` is the adaptive offset (or
// the Fisher damping eta_f) of tensor i (may be empty for the identity
// kinds); `coef[i]` the factor radius / norm of tensor i's group (may be
// empty for squared_norm). The coefficients are host numbers: the engine
// reads the norm once per step anyway, to skip non-finite ascents and to
// report it.
struct AscentSpec {
  Scaling scaling = Scaling::kIdentity;
  std::vector<double> eta;
  std::vector<double> coef;
};

// sum over all tensors of the squared scaled gradient (see Scaling), as a
// 0-dim fp32 tensor (fp64 if any input is fp64) on the device of the inputs.
// params and grads are parallel lists of tensors of equal shapes.
torch::Tensor squared_norm(torch::TensorList params, torch::TensorList grads,
                           const AscentSpec& spec);

// backups[i] = params[i]; params[i] += coef[i] * direction(params[i], grads[i]).
// Backups must have the shapes and dtypes of params. (The CUDA and CPU
// versions do this in one pass over memory; the reference uses temporaries.)
void ascend_with_backup(torch::TensorList params, torch::TensorList grads,
                        torch::TensorList backups, const AscentSpec& spec);

// params[i] = sources[i] + coef[i] * direction(sources[i], grads[i]).
// Used when an exact copy of w already exists elsewhere (TRAM-θt-1's prev
// buffer after the swap, TRAM-θ0's anchor).
void ascend_from(torch::TensorList params, torch::TensorList sources,
                 torch::TensorList grads, const AscentSpec& spec);

// dst[i] = src[i], bit-exact (the restore after the second pass). Each pair
// has one dtype and device (also for swap).
void copy(torch::TensorList dst, torch::TensorList src);

// Exchange the contents of a[i] and b[i] in place (TRAM-θt-1 memory trick).
void swap(torch::TensorList a, torch::TensorList b);

// sum over all tensors of ||a[i] - b[i]||^2, each difference taken in fp32
// (fp64 for fp64 tensors) and the squares summed in fp64, as a 0-dim fp64
// tensor on the device of the inputs (0 for empty lists): how far the ascent
// actually moved w (StepReport::perturbation_norm). Paired tensors have one
// shape, dtype and device.
torch::Tensor squared_distance(torch::TensorList a, torch::TensorList b);

// The ATen reference of each op above (same contracts), on any device: what
// the fused CPU loops and the CUDA kernels are tested and benchmarked
// against. Built from ATen ops (_foreach_ calls, log_softmax) with
// temporaries.
namespace reference {
torch::Tensor trust_region_divergence(const torch::Tensor& target_logits, const torch::Tensor& current_logits,
                                      Divergence divergence = Divergence::kForward,
                                      Reduction reduction = Reduction::kMean, const torch::Tensor& mask = {});
torch::Tensor squared_norm(torch::TensorList params, torch::TensorList grads, const AscentSpec& spec);
void ascend_with_backup(torch::TensorList params, torch::TensorList grads, torch::TensorList backups,
                        const AscentSpec& spec);
void ascend_from(torch::TensorList params, torch::TensorList sources, torch::TensorList grads,
                 const AscentSpec& spec);
void copy(torch::TensorList dst, torch::TensorList src);
void swap(torch::TensorList a, torch::TensorList b);
torch::Tensor squared_distance(torch::TensorList a, torch::TensorList b);
}  // namespace reference

// Names of the enums above, as the factory's options spell them
// ("forward", "mean", "adaptive", ...).
const char* to_string(Divergence divergence);
const char* to_string(Reduction reduction);
const char* to_string(Scaling scaling);

}  // namespace tram::ops
