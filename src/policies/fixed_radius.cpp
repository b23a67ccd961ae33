// The fixed radius: each group's rho (FSAM's and TRAM-Fisher's gamma).
#include <tram/policies.h>

namespace tram::policy {
namespace {
class FixedRadius final : public Radius {
 public:
  std::vector<double> radii(const std::vector<const GroupOptions*>& groups, double distance) const override {
    (void)distance;
    std::vector<double> radii;
    for (const auto* group : groups) radii.push_back(group->rho());
    return radii;
  }
};
}  // namespace

std::shared_ptr<const Radius> fixed_radius() { return std::make_shared<FixedRadius>(); }
}  // namespace tram::policy
