#include <tram/schedules.h>

#include <cmath>

namespace tram {

ProportionalRadius::ProportionalRadius(SharpnessAware& optimizer, double rho_max, double rho_min, double lr_max,
                                       double lr_min)
    : optimizer_(optimizer), rho_max_(rho_max), rho_min_(rho_min), lr_max_(lr_max), lr_min_(lr_min) {
  const auto& n = optimizer.method().name();
  TORCH_CHECK(optimizer.method().has_ascent() && optimizer.method().trust_region() == nullptr, n,
              ": ProportionalRadius schedules a fixed radius (rho); ", n,
              optimizer.method().has_ascent() ? " takes its radius from the trust-region distance" : " has no ascent");
  TORCH_CHECK(std::isfinite(rho_min) && std::isfinite(rho_max) && 0 <= rho_min && rho_min <= rho_max, n,
              ": ProportionalRadius: invalid radii rho_min ", rho_min, ", rho_max ", rho_max,
              " (need 0 <= rho_min <= rho_max)");
  TORCH_CHECK(std::isfinite(lr_min) && std::isfinite(lr_max) && lr_min <= lr_max, n,
              ": ProportionalRadius: invalid learning rates lr_min ", lr_min, ", lr_max ", lr_max,
              " (need lr_min <= lr_max)");
}

double ProportionalRadius::step() {
  const double lr = optimizer_.base().param_groups().at(0).options().get_lr();
  const double rho =
      lr_max_ == lr_min_ ? rho_max_ : rho_min_ + (rho_max_ - rho_min_) * (lr - lr_min_) / (lr_max_ - lr_min_);
  for (std::size_t g = 0; g < optimizer_.param_groups().size(); ++g) optimizer_.group_options(g).rho(rho);
  return rho;
}

}  // namespace tram
