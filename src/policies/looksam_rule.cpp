// LookSAM (Liu et al. 2022): the SAM step every k-th step, which also keeps
// g_v = g_p - (<g,g_p> / (||g||^2 + eps)) g, the part of the perturbed
// gradient orthogonal to g; the k - 1 steps between take one pass and reuse
// it: g + alpha (||g|| / (||g_v|| + eps)) g_v. (The engine's interval is k.)
#include <tram/policies.h>

#include "policies/gradient_math.h"

#include <cmath>

namespace tram::policy {
namespace {
const char* const kOrthogonal = "looksam_gv";

class LookSAMRule final : public GradientRule {
 public:
  explicit LookSAMRule(double alpha) : alpha_(alpha) {}

  std::vector<std::string> state_names() const override { return {kOrthogonal}; }
  bool keeps_first_gradient() const override { return true; }

  // The descent is g_p itself; g_v is kept for the steps between.
  void descent(GradientStep& step) const override {
    if (step.grads.empty()) return;
    const torch::Tensor along =
        detail::dot(step.first, step.grads) / (detail::squared_norm(step.first) + step.eps_norm);
    auto& kept = (*step.state)[kOrthogonal];
    for (size_t j = 0; j < step.grads.size(); ++j) {
      torch::Tensor& g_v = kept.at(step.index[j]);
      detail::assign(g_v, step.grads[j]);
      g_v.sub_(step.first[j] * detail::as_coefficient(along, step.first[j]));
    }
  }

  void descent_without_ascent(GradientStep& step) const override {
    const auto& kept = step.state->at(kOrthogonal);
    std::vector<torch::Tensor> g_v, g;
    for (size_t j = 0; j < step.grads.size(); ++j) {
      g_v.push_back(kept.at(step.index[j]));
      g.push_back(step.grads[j]);
    }
    bool any = false;
    for (const auto& t : g_v) any = any || t.defined();
    if (!any) return;  // no SAM step has run yet: the plain gradient
    const torch::Tensor coefficient =
        alpha_ * detail::squared_norm(g).sqrt() / (detail::squared_norm(g_v).sqrt() + step.eps_norm);
    for (size_t j = 0; j < step.grads.size(); ++j) {
      if (g_v[j].defined()) step.grads[j].add_(g_v[j] * detail::as_coefficient(coefficient, g_v[j]));
    }
  }

  void validate(const std::string& method) const override {
    TORCH_CHECK(alpha_ >= 0 && std::isfinite(alpha_), method, ": invalid alpha: ", alpha_,
                " (LookSAM's weight of the reused gradient component must be >= 0; the paper uses 0.7)");
  }

 private:
  double alpha_;
};
}  // namespace

std::shared_ptr<const GradientRule> looksam_rule(double alpha) { return std::make_shared<LookSAMRule>(alpha); }
}  // namespace tram::policy
