// FSAM (Kim et al. 2022) and TRAM-Fisher: f = 1 + eta_f g^2,
// e = r (g / f) / sqrt(sum g^2 / f + eps), eta_f per group.
#include <tram/policies.h>

#include <cmath>

namespace tram::policy {
namespace {
class FisherDirection final : public Direction {
 public:
  ops::Scaling scaling() const override { return ops::Scaling::kFisher; }
  double offset(const GroupOptions& group) const override { return group.fisher_eta(); }
  // FSAM divides by sqrt(s + eps), not sqrt(s) + eps.
  double norm_divisor(double squared_norm, double eps_norm) const override {
    return std::sqrt(squared_norm + eps_norm);
  }
};
}  // namespace

std::shared_ptr<const Direction> fisher_direction() { return std::make_shared<FisherDirection>(); }
}  // namespace tram::policy
