// GSAM (Zhuang et al. 2022): SAM's ascent, and a descent gradient that also
// lowers the surrogate gap: g_p - alpha g_perp, where g_perp = g - <g,u> u is
// the part of pass 1's gradient orthogonal to u = g_p / (||g_p|| + eps).
#include <tram/policies.h>

#include "policies/gradient_math.h"

#include <cmath>

namespace tram::policy {
namespace {
class GSAMRule final : public GradientRule {
 public:
  explicit GSAMRule(double alpha) : alpha_(alpha) {}

  bool keeps_first_gradient() const override { return true; }

  // g_p - alpha (g - <g,u> u) = g_p (1 + alpha <g,u> / (||g_p|| + eps)) - alpha g:
  // one pass over each tensor, the coefficients on the device.
  void descent(GradientStep& step) const override {
    if (step.grads.empty()) return;
    const torch::Tensor inverse = 1.0 / (detail::squared_norm(step.grads).sqrt() + step.eps_norm);
    const torch::Tensor along = detail::dot(step.first, step.grads) * inverse;  // <g,u>
    const torch::Tensor scale = 1.0 + alpha_ * along * inverse;
    for (size_t j = 0; j < step.grads.size(); ++j) {
      step.grads[j].mul_(detail::as_coefficient(scale, step.grads[j])).sub_(step.first[j], alpha_);
    }
  }

  void validate(const std::string& method) const override {
    TORCH_CHECK(alpha_ >= 0 && std::isfinite(alpha_), method, ": invalid alpha: ", alpha_,
                " (GSAM's weight of the orthogonal gradient must be >= 0; the paper uses 0.4)");
  }

 private:
  double alpha_;
};
}  // namespace

std::shared_ptr<const GradientRule> gsam_rule(double alpha) { return std::make_shared<GSAMRule>(alpha); }
}  // namespace tram::policy
