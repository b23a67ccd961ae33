#include <tram/grad_scaler.h>

#include "engine/host_reads.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

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
  const torch::Tensor found = unscale_unread(grads);
  // The one read of unscaling: whether the base step runs is decided on the host.
  return found.defined() && detail::read_scalar(found) > 0;
}

torch::Tensor GradScaler::unscale_unread(const std::vector<torch::Tensor>& grads) const {
  if (grads.empty()) return {};
  torch::NoGradGuard no_grad;
  // Per device, one fused pass: ATen's AMP op multiplies every gradient by
  // 1/scale and raises `found` on the device where any element is inf or
  // NaN afterwards. The flags are summed on the first device, for one
  // device-to-host read per step phase where a read per tensor would stall
  // the stream once per parameter. A disabled scaler still checks
  // (multiplying by 1 changes nothing).
  std::vector<std::pair<torch::Device, std::vector<torch::Tensor>>> by_device;
  for (const auto& g : grads) {
    auto group = std::find_if(by_device.begin(), by_device.end(), [&](const auto& e) { return e.first == g.device(); });
    if (group == by_device.end()) group = by_device.insert(by_device.end(), {g.device(), {}});
    group->second.push_back(g);
  }
  const double inverse = 1.0 / scale();
  torch::Tensor found;
  for (auto& [device, group] : by_device) {
    const auto options = torch::TensorOptions(torch::kFloat32).device(device);
    torch::Tensor flag = torch::zeros({1}, options);
    at::_amp_foreach_non_finite_check_and_unscale_(group, flag, torch::full({1}, inverse, options));
    found = found.defined() ? found + flag.to(found.device()) : flag;
  }
  return found;
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
