// SAM (Foret et al. 2021): e = r g / (||g|| + eps), T = 1.
#include <tram/policies.h>

namespace tram::policy {
namespace {
class SAMDirection final : public Direction {
 public:
  ops::Scaling scaling() const override { return ops::Scaling::kIdentity; }
};
}  // namespace

std::shared_ptr<const Direction> sam_direction() { return std::make_shared<SAMDirection>(); }
}  // namespace tram::policy
