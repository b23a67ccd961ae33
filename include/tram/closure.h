// The forward closure: the optimizer asks the user's code for one forward pass
// at a time and runs the backward passes itself, so that every method — from
// plain SGD to TRAM-Fisher with an R3F regularizer — is driven by one loop.
#pragma once

#include <tram/options.h>

#include <torch/types.h>

#include <functional>
#include <memory>
#include <optional>

namespace tram {

// What a forward pass is for. The closure can ignore it: the optimizer sets
// grad mode and the module's train/eval mode itself, and Pass::perturb adds
// noise exactly on the passes that need it.
enum class PassKind {
  kClean,      // pass 1 at w, with gradient
  kTarget,     // a trust-region target under no-grad (θt-1, θ0, EMA, or noised inputs)
  kNoisy,      // with gradient, on noised embeddings (R3F, TRAM-Fisher's pass 1)
  kPerturbed,  // pass 2 at w + e, with gradient
  kPerturbedNoisy,  // R3F's noised pass at w + e, with gradient
  kSelection,  // ESAM's data selection: no-grad at w + e, in train mode, for per-row losses
};

const char* to_string(PassKind kind);

class Pass;

// Draws the noise z added to `embeddings` on a noisy pass. The default draws
// from LibTorch's global generator (normal or uniform, per NoiseOptions);
// tram-trace and tests install a sampler that returns fixed noise.
using NoiseSampler =
    std::function<torch::Tensor(const torch::Tensor& embeddings, const NoiseOptions& options, const Pass& pass)>;

class Pass {
 public:
  Pass(PassKind kind, std::optional<NoiseOptions> noise, const NoiseSampler* sampler, int64_t micro_batch = 0,
       int64_t micro_batches = 1, torch::Tensor rows = {})
      : kind_(kind), noise_(std::move(noise)), sampler_(sampler), micro_batch_(micro_batch),
        micro_batches_(micro_batches), rows_(std::move(rows)) {}

  PassKind kind() const { return kind_; }
  // With gradient accumulation (SharpnessAware::set_gradient_accumulation),
  // which micro-batch of the step this pass is for: 0 <= micro_batch() < micro_batches().
  int64_t micro_batch() const { return micro_batch_; }
  int64_t micro_batches() const { return micro_batches_; }
  bool requires_grad() const { return kind_ != PassKind::kTarget && kind_ != PassKind::kSelection; }
  bool noisy() const { return noise_.has_value(); }

  // Returns `embeddings + z` on noisy passes and `embeddings` itself on every
  // other pass. Call it on the token/patch embeddings, before position
  // embeddings and normalisation (docs/ALGORITHMS.md §4).
  torch::Tensor perturb(const torch::Tensor& embeddings) const;

  // ESAM's data selection (docs/ALGORITHMS.md §16): on pass 2 the rows of the
  // batch to use, as sorted int64 indices into dim 0; undefined on every other
  // pass (use all rows). select() applies it to a batch tensor:
  //
  //   auto x = pass.select(inputs), y = pass.select(labels);
  const torch::Tensor& rows() const { return rows_; }
  torch::Tensor select(const torch::Tensor& batch) const;

 private:
  PassKind kind_;
  std::optional<NoiseOptions> noise_;
  const NoiseSampler* sampler_;
  int64_t micro_batch_;
  int64_t micro_batches_;
  torch::Tensor rows_;
};

// What the closure returns for one pass. `loss` is the task loss (a scalar;
// may be undefined on target passes); `logits` are [rows, classes] or
// [batch, seq, vocab]; `mask` (optional) marks the valid prediction rows,
// shape logits.shape[:-1]. `row_losses` (optional) is the task loss of each
// example, shape [batch] (dim 0 of the logits), whose mean is `loss`: ESAM's
// data selection needs it, every other method ignores it.
struct PassOutput {
  torch::Tensor loss;
  torch::Tensor logits;
  torch::Tensor mask;
  torch::Tensor row_losses = {};  // defaulted, so {loss, logits, mask} stays warning-free
};

using ForwardClosure = std::function<PassOutput(const Pass&)>;

// A number of a StepReport that the step itself did not need on the host: it
// stays on the device as a scalar tensor until it is first used as a double,
// then it is read once (one tram::host_reads(), a synchronisation on a GPU)
// and kept; copies of the report share the read. A step whose report is
// not read copies none of these values to the host.
class ReportValue {
 public:
  ReportValue(double value = 0.0) : value_(value) {}  // NOLINT: a plain number converts
  // A scalar tensor, read when first used.
  static ReportValue on_device(torch::Tensor scalar);
  // a - b: on the device while both are, else on the host.
  static ReportValue minus(const ReportValue& a, const ReportValue& b);

  double value() const;
  operator double() const { return value(); }  // NOLINT: used as the number it is
  // Whether the value is still on the device (not read yet).
  bool pending() const;

 private:
  struct Pending;
  std::shared_ptr<Pending> pending_;
  double value_;
};

// What one step did; also kept as SharpnessAware::last_step().
struct StepReport {
  ReportValue loss;               // task loss of pass 1
  ReportValue regularizer;        // R of pass 1 (0 without a regularizer)
  double distance = 0.0;          // trust-region distance d (0 without one)
  double ascent_norm = 0.0;       // ||T g|| (or sqrt(sum g^2/f) for Fisher)
  ReportValue perturbation_norm;  // ||e||, the length of the perturbation applied (0 without ascent)
  // The task loss of pass 2 at w + e (0 without ascent), and GSAM's surrogate
  // gap sharpness = perturbed_loss - loss (docs/ALGORITHMS.md §1).
  ReportValue perturbed_loss;
  ReportValue sharpness;
  std::vector<double> radius;     // ascent radius of each group
  bool ascent_skipped = false;    // non-finite gradient norm: no ascent this step
  bool step_skipped = false;      // loss scaling found inf/NaN: no base step this step
  int passes = 0;                 // forward passes run
};

}  // namespace tram
