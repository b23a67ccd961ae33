#include <tram/grad_scaler.h>

#include <torch/torch.h>

#include <cmath>

namespace tram {

GradScaler::GradScaler(GradScalerOptions options) : options_(options), scale_(options.init_scale()) {
  TORCH_CHECK(options_.init_scale() > 0 && std::isfinite(options_.init_scale()),
              "tram::GradScaler: invalid init_scale: ", options_.init_scale(), " (must be a positive number)");
  TORCH_CHECK(options_.growth_factor() > 1, "tram::GradScaler: invalid growth_factor: ", options_.growth_factor(),
              " (must be > 1)");
  TORCH_CHECK(options_.backoff_factor() > 0 && options_.backoff_factor() < 1,
              "tram::GradScaler: invalid backoff_factor: ", options_.backoff_factor(), " (must be in (0, 1))");
  TORCH_CHECK(options_.growth_interval() >= 1, "tram::GradScaler: invalid growth_interval: ",
              options_.growth_interval(), " (must be >= 1)");
}

bool GradScaler::unscale(const std::vector<torch::Tensor>& grads) const {
  if (grads.empty()) return false;
  torch::NoGradGuard no_grad;
  if (enabled()) torch::_foreach_mul_(grads, 1.0 / scale_);
  // One reduction per tensor and one host read: a sum accumulated in fp64 is
  // non-finite exactly when an element is (finite fp32/fp16 values cannot
  // overflow an fp64 sum).
  std::vector<torch::Tensor> sums;
  for (const auto& g : grads) sums.push_back(g.sum(torch::kFloat64).to(torch::kCPU));
  return !torch::stack(sums).isfinite().all().item<bool>();
}

void GradScaler::update(bool found_inf) {
  if (!enabled()) return;
  if (found_inf) {
    scale_ *= options_.backoff_factor();
    growth_tracker_ = 0;
    ++skipped_steps_;
  } else if (++growth_tracker_ == options_.growth_interval()) {
    scale_ *= options_.growth_factor();
    growth_tracker_ = 0;
  }
}

void GradScaler::save(torch::serialize::OutputArchive& archive) const {
  archive.write("scale", c10::IValue(scale_));
  archive.write("growth_tracker", c10::IValue(growth_tracker_));
  archive.write("skipped_steps", c10::IValue(skipped_steps_));
}

void GradScaler::load(torch::serialize::InputArchive& archive) {
  c10::IValue value;
  archive.read("scale", value);
  scale_ = value.toDouble();
  archive.read("growth_tracker", value);
  growth_tracker_ = value.toInt();
  archive.read("skipped_steps", value);
  skipped_steps_ = value.toInt();
}

}  // namespace tram
