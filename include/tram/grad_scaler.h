// Dynamic loss scaling for fp16 training, with the semantics of PyTorch's
// torch.amp.GradScaler (LibTorch C++ has none).
//
// With a tram optimizer it is attached once, and the optimizer does the rest:
//
//   auto scaler = std::make_shared<tram::GradScaler>();
//   optimizer->set_grad_scaler(scaler);
//   optimizer->step(forward_closure);   // scaled backward, unscale, inf check, update
//
// With step(LossClosure) or the two-call API the closure calls
// `scaler->scale(loss).backward()` itself; the optimizer unscales before the
// ascent (FSAM, TRAM-Fisher and the TRAM radius are not scale-invariant) and
// skips the whole step when either pass produced inf/NaN.
#pragma once

#include <torch/arg.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <cstdint>

namespace tram {

struct GradScalerOptions {
  TORCH_ARG(double, init_scale) = 65536.0;
  TORCH_ARG(double, growth_factor) = 2.0;
  TORCH_ARG(double, backoff_factor) = 0.5;
  // Grow the scale after this many consecutive steps without inf/NaN.
  TORCH_ARG(int64_t, growth_interval) = 2000;
  TORCH_ARG(bool, enabled) = true;
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {});

  double scale() const { return enabled() ? scale_ : 1.0; }
  bool enabled() const { return options_.enabled(); }
  torch::Tensor scale(const torch::Tensor& loss) const { return enabled() ? loss * scale_ : loss; }

  // Divides the gradients by the scale in place; returns true when any is
  // inf or NaN (checked after unscaling, as GradScaler does). One read of
  // the flag to the host.
  bool unscale(const std::vector<torch::Tensor>& grads) const;
  // The same, without the read: the number of devices whose gradients hold an
  // inf or NaN, as a one-element float32 tensor on the first gradient's
  // device (undefined for no gradients). The ascent reads it together with
  // the values the ascent needs.
  torch::Tensor unscale_unread(const std::vector<torch::Tensor>& grads) const;

  // After a step: back off on inf/NaN, otherwise count towards growth.
  void update(bool found_inf);

  int64_t skipped_steps() const { return skipped_steps_; }
  const GradScalerOptions& options() const { return options_; }

  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

 private:
  GradScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
  int64_t skipped_steps_ = 0;
};

}  // namespace tram
