// TRAM-θt-1 (docs/ALGORITHMS.md §4): the model at the previous step's
// parameters, θt-1 = θ0 at the first step. The set is also TRPO's.
#include <tram/policies.h>

namespace tram::policy {
namespace {
class PreviousParameters final : public ParameterSet {
 public:
  std::string name() const override { return "previous"; }
  bool tracks_previous_step() const override { return true; }
};
}  // namespace

std::shared_ptr<const ParameterSet> previous_parameters() { return std::make_shared<PreviousParameters>(); }
std::shared_ptr<const Target> previous_target() { return parameter_set_target(previous_parameters()); }
}  // namespace tram::policy
