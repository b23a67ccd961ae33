// What the distances share: the valid prediction rows of a logit tensor,
// flattened to [rows, classes] in the accumulation dtype, and the guarded
// division of their device-side reductions.
#pragma once

#include <torch/types.h>

namespace tram::policy {

// fp64 when either side is fp64, else fp32.
inline torch::ScalarType distance_dtype(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == torch::kFloat64 || b.scalar_type() == torch::kFloat64 ? torch::kFloat64
                                                                                  : torch::kFloat32;
}

// The rows of `logits` ([..., classes], or 1-D: one row) that `mask` (shape
// logits.shape[:-1], nonzero = valid; undefined = all) keeps, as [rows, classes].
inline torch::Tensor valid_rows(const torch::Tensor& logits, const torch::Tensor& mask, torch::ScalarType dtype) {
  const int64_t classes = logits.dim() == 0 ? 1 : logits.size(-1);
  torch::Tensor rows = logits.detach().reshape({-1, classes}).to(dtype);
  if (!mask.defined()) return rows;
  return rows.index({mask.reshape({-1}).ne(0).to(rows.device())});
}

// The batch size the legacy reduction divides by once more: size(0), or 1 for one row.
inline double leading_size(const torch::Tensor& logits) {
  return logits.dim() > 1 ? static_cast<double>(logits.size(0)) : 1.0;
}

// `ratio` where `denominator` > 0, else 0: a reduction over no rows is 0.
// Both are float64 tensors on the device; nothing is read.
inline torch::Tensor ratio_or_zero(const torch::Tensor& ratio, const torch::Tensor& denominator) {
  return torch::where(denominator > 0, ratio, torch::zeros_like(ratio));
}

}  // namespace tram::policy
