// ASAM (Kwon et al. 2021) and the TRAM variants: e = r T^2 g / (||T g|| + eps)
// with T = |w| + eta, eta per group.
#include <tram/policies.h>

namespace tram::policy {
namespace {
class AdaptiveDirection final : public Direction {
 public:
  ops::Scaling scaling() const override { return ops::Scaling::kAdaptive; }
  double offset(const GroupOptions& group) const override { return group.eta(); }
};
}  // namespace

std::shared_ptr<const Direction> adaptive_direction() { return std::make_shared<AdaptiveDirection>(); }
}  // namespace tram::policy
