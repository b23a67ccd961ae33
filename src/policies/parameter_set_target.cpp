// A trust-region target that is the model at one of the parameter sets (θt-1,
// θ0, ...): the engine runs its no-grad passes before pass 1, and d compares
// their logits with pass 1's.
#include <tram/policies.h>

namespace tram::policy {
namespace {
class ParameterSetTarget final : public Target {
 public:
  explicit ParameterSetTarget(std::shared_ptr<const ParameterSet> set) : set_(std::move(set)) {}
  std::vector<std::shared_ptr<const ParameterSet>> parameter_sets() const override { return {set_}; }
  void add_distance(Passes& passes, int64_t micro_batch, const PassOutput& first, DistanceSum& sum) const override {
    sum.add(passes.logits_at(set_->name(), micro_batch), first.logits, first.mask);
  }

 private:
  std::shared_ptr<const ParameterSet> set_;
};
}  // namespace

std::shared_ptr<const Target> parameter_set_target(std::shared_ptr<const ParameterSet> set) {
  TORCH_CHECK(set != nullptr, "tram: a parameter-set target needs a parameter set");
  return std::make_shared<ParameterSetTarget>(std::move(set));
}
}  // namespace tram::policy
