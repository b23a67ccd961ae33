// TRAM's radius (docs/ALGORITHMS.md §3): r = clamp(scale * d, 0, max_radius)
// for every group, d measured in the trust region this step.
#include <tram/policies.h>

#include <algorithm>
#include <cmath>

namespace tram::policy {
namespace {
class TrustRegionRadius final : public Radius {
 public:
  explicit TrustRegionRadius(TrustRegion region) : region_(std::move(region)) {}

  const TrustRegion* trust_region() const override { return &region_; }

  std::vector<double> radii(const std::vector<const GroupOptions*>& groups, double distance) const override {
    double radius = std::max(0.0, region_.scale * distance);
    if (region_.max_radius) radius = std::min(radius, *region_.max_radius);
    return std::vector<double>(groups.size(), radius);
  }

  void validate(const std::string& method) const override {
    const double scale = region_.scale;
    const auto& max_radius = region_.max_radius;
    TORCH_CHECK(scale >= 0 && std::isfinite(scale), method, ": invalid scale: ", scale,
                " (must be >= 0; the radius is scale * d)");
    TORCH_CHECK(!max_radius || *max_radius >= 0, method, ": invalid max_radius: ", max_radius.value_or(0),
                " (must be >= 0, or unset for no bound)");
  }

 private:
  TrustRegion region_;
};
}  // namespace

std::shared_ptr<const Radius> trust_region_radius(TrustRegion region) {
  return std::make_shared<TrustRegionRadius>(std::move(region));
}
}  // namespace tram::policy
