// F-SAM, "Friendly SAM" (Li et al. 2024): the ascent follows the batch-specific
// part of the gradient, d = g - sigma m, where m is an EMA of past gradients
// (the full-gradient estimate): m <- lambda m + (1 - lambda) g after each
// ascent, m_0 = g, and the first ascent follows g itself.
#include <tram/policies.h>

#include "policies/gradient_math.h"

#include <cmath>

namespace tram::policy {
namespace {
const char* const kAverage = "friendly_sam_m";

class FriendlySAMRule final : public GradientRule {
 public:
  FriendlySAMRule(double sigma, double lambda) : sigma_(sigma), lambda_(lambda) {}

  std::vector<std::string> state_names() const override { return {kAverage}; }

  void prepare_ascent(AscentStep& ascent) const override {
    const auto& average = ascent.state->at(kAverage);
    for (size_t j = 0; j < ascent.vectors.size(); ++j) {
      const torch::Tensor& m = average.at(ascent.index[j]);
      if (m.defined()) ascent.vectors[j] = ascent.grads[j] - sigma_ * m;
    }
  }

  void after_ascent(const AscentStep& ascent) const override {
    auto& average = (*ascent.state)[kAverage];
    for (size_t j = 0; j < ascent.grads.size(); ++j) {
      torch::Tensor& m = average.at(ascent.index[j]);
      if (m.defined()) {
        m.mul_(lambda_).add_(ascent.grads[j], 1.0 - lambda_);
      } else {
        detail::assign(m, ascent.grads[j]);
      }
    }
  }

  void validate(const std::string& method) const override {
    TORCH_CHECK(sigma_ >= 0 && std::isfinite(sigma_), method, ": invalid sigma: ", sigma_,
                " (F-SAM's weight of the gradient average removed from the ascent must be >= 0; the paper uses 1)");
    TORCH_CHECK(lambda_ >= 0 && lambda_ < 1, method, ": invalid friendly_lambda: ", lambda_,
                " (F-SAM's EMA factor of the gradient average must be in [0, 1); the paper uses 0.9)");
  }

 private:
  double sigma_, lambda_;
};
}  // namespace

std::shared_ptr<const GradientRule> friendly_sam_rule(double sigma, double lambda) {
  return std::make_shared<FriendlySAMRule>(sigma, lambda);
}
}  // namespace tram::policy
