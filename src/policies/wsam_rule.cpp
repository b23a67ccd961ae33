// WSAM (Yue et al. 2023): the loss plus a = gamma / (1 - gamma) times SAM's
// sharpness. Coupled, the descent gradient is a g_p + (1 - a) g; decoupled (the
// paper's default), the base steps with g alone and the sharpness term
// a (g_p - g) is applied after it as plain gradient descent at the base's rate,
// so the base's moments and weight decay never see it.
#include <tram/policies.h>

#include <cmath>

namespace tram::policy {
namespace {
const char* const kSharpnessGradient = "wsam_sharpness_gradient";

class WSAMRule final : public GradientRule {
 public:
  WSAMRule(double gamma, bool decouple) : gamma_(gamma), decouple_(decouple) {}

  bool keeps_first_gradient() const override { return true; }

  void descent(GradientStep& step) const override {
    const double a = gamma_ / (1.0 - gamma_);
    if (!decouple_) {
      for (size_t j = 0; j < step.grads.size(); ++j) step.grads[j].mul_(a).add_(step.first[j], 1.0 - a);
      return;
    }
    auto& pending = (*step.scratch)[kSharpnessGradient];
    pending.clear();
    for (size_t j = 0; j < step.grads.size(); ++j) {
      pending.push_back(step.grads[j] - step.first[j]);
      step.grads[j].copy_(step.first[j]);
    }
  }

  void after_base_step(GradientStep& step) const override {
    if (!decouple_) return;
    const double a = gamma_ / (1.0 - gamma_);
    const auto& pending = step.scratch->at(kSharpnessGradient);
    TORCH_CHECK(pending.size() == step.params.size(), "WSAM: internal error: the parameters with a gradient "
                "changed during the base step");
    for (size_t j = 0; j < step.params.size(); ++j) step.params[j].sub_(pending[j], step.learning_rate[j] * a);
  }

  void validate(const std::string& method) const override {
    TORCH_CHECK(gamma_ >= 0 && gamma_ < 1, method, ": invalid gamma: ", gamma_,
                " (WSAM's sharpness weight must be in [0, 1): a = gamma / (1 - gamma); the paper uses 0.9)");
  }

 private:
  double gamma_;
  bool decouple_;
};
}  // namespace

std::shared_ptr<const GradientRule> wsam_rule(double gamma, bool decouple) {
  return std::make_shared<WSAMRule>(gamma, decouple);
}
}  // namespace tram::policy
