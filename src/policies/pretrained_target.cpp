// TRAM-θ0 (docs/ALGORITHMS.md §4): the model at the parameters it had when
// the optimizer was built (the pre-trained model with its fresh head).
#include <tram/policies.h>

namespace tram::policy {
namespace {
class PretrainedParameters final : public ParameterSet {
 public:
  std::string name() const override { return "pretrained"; }
};
}  // namespace

std::shared_ptr<const ParameterSet> pretrained_parameters() { return std::make_shared<PretrainedParameters>(); }
std::shared_ptr<const Target> pretrained_target() { return parameter_set_target(pretrained_parameters()); }
}  // namespace tram::policy
