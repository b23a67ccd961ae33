// The released TRAM code's ascent (docs/ALGORITHMS.md §2, §12), which never
// multiplies by g: e = r T^2 / (||T g|| + eps) with T = |w| + eta (adaptive),
// or e = r / (||g|| + eps) in every element (not adaptive). Only for
// comparing with the paper's formula.
#include <tram/policies.h>

namespace tram::policy {
namespace {
class ReleasedDirection final : public Direction {
 public:
  explicit ReleasedDirection(bool adaptive) : adaptive_(adaptive) {}
  ops::Scaling scaling() const override {
    return adaptive_ ? ops::Scaling::kReleasedAdaptive : ops::Scaling::kReleasedIdentity;
  }
  double offset(const GroupOptions& group) const override { return adaptive_ ? group.eta() : 0.0; }

 private:
  bool adaptive_;
};
}  // namespace

std::shared_ptr<const Direction> released_direction(bool adaptive) {
  return std::make_shared<ReleasedDirection>(adaptive);
}
}  // namespace tram::policy
