// R3F (Aghajanyan et al. 2021; docs/ALGORITHMS.md §7): a second forward on
// noised embeddings with gradient, R = KL(p_clean || p_noisy) + KL(p_noisy ||
// p_clean), batch mean; its noised pass follows every pass it regularizes.
#include <tram/policies.h>

#include "policies/regularizer_checks.h"

#include <cmath>

namespace tram::policy {
namespace {
class R3FRegularizer final : public Regularizer {
 public:
  R3FRegularizer(double lambda, NoiseOptions noise) : lambda_(lambda), noise_(noise) {}
  std::string name() const override { return "R3F"; }
  double weight() const override { return lambda_; }
  torch::Tensor penalty(Passes& passes, int64_t micro_batch, const PassOutput& out, bool perturbed) const override {
    const auto noisy = passes.run(perturbed ? PassKind::kPerturbedNoisy : PassKind::kNoisy, noise_, micro_batch);
    return ops::trust_region_divergence(out.logits, noisy.logits, ops::Divergence::kSymmetric, ops::Reduction::kMean,
                                        out.mask);
  }
  std::optional<NoiseOptions> noise() const override { return noise_; }
  void validate(const std::string& method) const override {
    check_weight(method, lambda_);
    TORCH_CHECK(noise_.sigma() >= 0 && std::isfinite(noise_.sigma()), method, ": invalid reg_sigma: ",
                noise_.sigma(), " (must be >= 0)");
  }

 private:
  double lambda_;
  NoiseOptions noise_;
};
}  // namespace

std::shared_ptr<const Regularizer> r3f_regularizer(double lambda, NoiseOptions noise) {
  return std::make_shared<R3FRegularizer>(lambda, noise);
}
}  // namespace tram::policy
