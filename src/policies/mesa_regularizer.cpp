// MESA (Du et al. 2022; docs/ALGORITHMS.md §7): the teacher is an EMA of the
// parameters, updated after every base step; R = tau^2 KL(p_ema^tau || p^tau)
// at temperature tau, the teacher under no-grad.
#include <tram/policies.h>

#include "policies/regularizer_checks.h"

#include <cmath>

namespace tram::policy {
namespace {
class EMAParameters final : public ParameterSet {
 public:
  explicit EMAParameters(double decay) : decay_(decay) {}
  std::string name() const override { return "ema"; }
  void after_base_step(torch::TensorList set, torch::TensorList params) const override {
    torch::_foreach_lerp_(set, params, 1.0 - decay_);
  }

 private:
  double decay_;
};

class MESARegularizer final : public Regularizer {
 public:
  MESARegularizer(double lambda, double decay, double temperature)
      : lambda_(lambda), decay_(decay), temperature_(temperature), set_(ema_parameters(decay)) {}
  std::string name() const override { return "MESA"; }
  double weight() const override { return lambda_; }
  std::vector<std::shared_ptr<const ParameterSet>> parameter_sets() const override { return {set_}; }
  torch::Tensor penalty(Passes& passes, int64_t micro_batch, const PassOutput& out, bool) const override {
    const double tau = temperature_;
    return tau * tau *
           ops::trust_region_divergence(passes.logits_at(set_->name(), micro_batch) / tau, out.logits / tau,
                                        ops::Divergence::kForward, ops::Reduction::kMean, out.mask);
  }
  void validate(const std::string& method) const override {
    check_weight(method, lambda_);
    TORCH_CHECK(decay_ >= 0 && decay_ <= 1, method, ": invalid ema_decay: ", decay_, " (must be in [0, 1])");
    TORCH_CHECK(temperature_ > 0 && std::isfinite(temperature_), method, ": invalid temperature: ", temperature_,
                " (must be > 0)");
  }

 private:
  double lambda_, decay_, temperature_;
  std::shared_ptr<const ParameterSet> set_;
};
}  // namespace

std::shared_ptr<const ParameterSet> ema_parameters(double decay) { return std::make_shared<EMAParameters>(decay); }
std::shared_ptr<const Regularizer> mesa_regularizer(double lambda, double ema_decay, double temperature) {
  return std::make_shared<MESARegularizer>(lambda, ema_decay, temperature);
}
}  // namespace tram::policy
