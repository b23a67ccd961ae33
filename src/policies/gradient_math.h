// Global reductions over a list of gradient-shaped tensors, for the gradient
// rules. Results stay on the device as 0-dim float64 tensors, so a rule's
// coefficients never read a value to the host.
#pragma once

#include <torch/types.h>

#include <vector>

namespace tram::policy::detail {

// sum_i <a_i, b_i>, accumulated in float64.
inline torch::Tensor dot(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  torch::Tensor total;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].defined() || !b[i].defined()) continue;
    torch::Tensor part = (a[i] * b[i]).sum(torch::kFloat64);
    total = total.defined() ? total + part : part;
  }
  if (!total.defined()) {
    const auto device = a.empty() || !a[0].defined() ? torch::Device(torch::kCPU) : a[0].device();
    total = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device));
  }
  return total;
}

inline torch::Tensor squared_norm(const std::vector<torch::Tensor>& a) { return dot(a, a); }

// A 0-dim coefficient in the dtype of the tensor it scales (the in-place ops
// then need no promotion).
inline torch::Tensor as_coefficient(const torch::Tensor& coefficient, const torch::Tensor& like) {
  return coefficient.to(like.scalar_type());
}

// Copies `value` into `slot`, allocating it only when it is missing or of
// another shape, dtype or device (state buffers are reused across steps).
inline void assign(torch::Tensor& slot, const torch::Tensor& value) {
  if (!slot.defined() || slot.sizes() != value.sizes() || slot.scalar_type() != value.scalar_type() ||
      slot.device() != value.device()) {
    slot = torch::empty_like(value, torch::MemoryFormat::Contiguous);
  }
  slot.copy_(value);
}

}  // namespace tram::policy::detail
