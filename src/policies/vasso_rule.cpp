// VaSSO (Li & Giannakis 2023): the ascent follows a variance-suppressed
// estimate d <- (1 - theta) d + theta g of the gradient (d = g at the first
// ascent) instead of the batch's g.
#include <tram/policies.h>

#include "policies/gradient_math.h"

#include <cmath>

namespace tram::policy {
namespace {
const char* const kEstimate = "vasso_d";

class VaSSORule final : public GradientRule {
 public:
  explicit VaSSORule(double theta) : theta_(theta) {}

  std::vector<std::string> state_names() const override { return {kEstimate}; }

  void prepare_ascent(AscentStep& ascent) const override {
    const auto& estimate = ascent.state->at(kEstimate);
    for (size_t j = 0; j < ascent.vectors.size(); ++j) {
      const torch::Tensor& d = estimate.at(ascent.index[j]);
      if (d.defined()) ascent.vectors[j] = d * (1.0 - theta_) + ascent.grads[j] * theta_;
    }
  }

  // The new d is what the ascent followed.
  void after_ascent(const AscentStep& ascent) const override {
    auto& estimate = (*ascent.state)[kEstimate];
    for (size_t j = 0; j < ascent.vectors.size(); ++j) detail::assign(estimate.at(ascent.index[j]), ascent.vectors[j]);
  }

  void validate(const std::string& method) const override {
    TORCH_CHECK(theta_ > 0 && theta_ <= 1, method, ": invalid theta: ", theta_,
                " (VaSSO's weight of the new gradient must be in (0, 1]; the paper uses 0.9)");
  }

 private:
  double theta_;
};
}  // namespace

std::shared_ptr<const GradientRule> vasso_rule(double theta) { return std::make_shared<VaSSORule>(theta); }
}  // namespace tram::policy
