// ESAM (Du et al. 2022). SWP: each parameter tensor takes part in the ascent
// with probability beta, drawn per step and tensor from a counter-based hash
// of (seed, step, tensor) — reproducible, the same on every rank, and nothing
// to save — with the radius rho / beta. SDS: pass 2 keeps the fraction gamma
// of the rows whose loss the ascent raised most (the engine's selection pass).
#include <tram/policies.h>

#include <cmath>
#include <cstdint>

namespace tram::policy {

double esam_uniform(uint64_t seed, int64_t step, size_t tensor) {
  // SplitMix64's finalizer over a Weyl-style combination of the three keys.
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + (static_cast<uint64_t>(step) + 1) * 0xBF58476D1CE4E5B9ULL +
               (static_cast<uint64_t>(tensor) + 1) * 0x94D049BB133111EBULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z = z ^ (z >> 31);
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

namespace {
class ESAMRule final : public GradientRule {
 public:
  ESAMRule(double beta, double gamma, uint64_t seed) : beta_(beta), gamma_(gamma), seed_(seed) {}

  std::optional<double> kept_row_fraction() const override { return gamma_; }

  void prepare_ascent(AscentStep& ascent) const override {
    for (size_t j = 0; j < ascent.perturb.size(); ++j) {
      if (esam_uniform(seed_, ascent.step, ascent.index[j]) >= beta_) ascent.perturb[j] = false;
    }
    for (double& r : ascent.radii) r /= beta_;
  }

  void validate(const std::string& method) const override {
    TORCH_CHECK(beta_ > 0 && beta_ <= 1, method, ": invalid beta: ", beta_,
                " (ESAM's probability that a tensor is perturbed must be in (0, 1]; the paper uses 0.5)");
    TORCH_CHECK(gamma_ > 0 && gamma_ <= 1, method, ": invalid gamma: ", gamma_,
                " (ESAM's fraction of rows kept for pass 2 must be in (0, 1]; the paper uses 0.5)");
  }

 private:
  double beta_, gamma_;
  uint64_t seed_;
};
}  // namespace

std::shared_ptr<const GradientRule> esam_rule(double beta, double gamma, uint64_t seed) {
  return std::make_shared<ESAMRule>(beta, gamma, seed);
}
}  // namespace tram::policy
