// TRAM-EMA (the released code's ParameterHistoryTarget; docs/ALGORITHMS.md
// §4): the target parameters θ̄ start at θ0 and follow the parameters once
// per step, after the restore and before the base step:
// θ̄ <- δ θ̄ + (1 - δ) w. δ = 0 is exactly TRAM-θt-1 and δ = 1 exactly TRAM-θ0
// (lerp's end points are exact).
#include <tram/policies.h>

namespace tram::policy {
namespace {
class HistoryParameters final : public ParameterSet {
 public:
  explicit HistoryParameters(double decay) : decay_(decay) {}
  std::string name() const override { return "history"; }
  void before_base_step(torch::TensorList set, torch::TensorList params) const override {
    torch::_foreach_lerp_(set, params, 1.0 - decay_);
  }

 private:
  double decay_;
};
}  // namespace

std::shared_ptr<const ParameterSet> history_parameters(double decay) {
  TORCH_CHECK(decay >= 0 && decay <= 1, "TRAM-EMA: invalid target_decay: ", decay,
              " (must be in [0, 1]: 0 follows the previous step, 1 stays at θ0)");
  return std::make_shared<HistoryParameters>(decay);
}
std::shared_ptr<const Target> history_target(double decay) { return parameter_set_target(history_parameters(decay)); }
}  // namespace tram::policy
