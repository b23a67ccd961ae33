// TRPO-KL (docs/ALGORITHMS.md §7): R = KL(p_θt-1 || p_θ), the previous step's
// model under no-grad (the same θt-1 set as TRAM-θt-1, with its swap trick).
#include <tram/policies.h>

#include "policies/regularizer_checks.h"

namespace tram::policy {
namespace {
class TRPORegularizer final : public Regularizer {
 public:
  explicit TRPORegularizer(double lambda) : lambda_(lambda) {}
  std::string name() const override { return "TRPO"; }
  double weight() const override { return lambda_; }
  std::vector<std::shared_ptr<const ParameterSet>> parameter_sets() const override { return {set_}; }
  torch::Tensor penalty(Passes& passes, int64_t micro_batch, const PassOutput& out, bool) const override {
    return ops::trust_region_divergence(passes.logits_at(set_->name(), micro_batch), out.logits,
                                        ops::Divergence::kForward, ops::Reduction::kMean, out.mask);
  }
  void validate(const std::string& method) const override { check_weight(method, lambda_); }

 private:
  double lambda_;
  std::shared_ptr<const ParameterSet> set_ = previous_parameters();
};
}  // namespace

std::shared_ptr<const Regularizer> trpo_regularizer(double lambda) {
  return std::make_shared<TRPORegularizer>(lambda);
}
}  // namespace tram::policy
