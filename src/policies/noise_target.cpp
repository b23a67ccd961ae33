// TRAM-ε (docs/ALGORITHMS.md §4): the current model on noised input
// embeddings, d = D(p(emb + z) || p(emb)). Its no-grad passes run before
// pass 1, so the noise never reaches the other passes.
#include <tram/policies.h>

#include <cmath>

namespace tram::policy {
namespace {
class NoiseTarget final : public Target {
 public:
  explicit NoiseTarget(NoiseOptions noise) : noise_(noise) {}

  void before_first_pass(Passes& passes) const override {
    auto& logits = passes.scratch(kKey);
    for (int64_t i = 0; i < passes.micro_batches(); ++i) {
      logits.push_back(passes.run(PassKind::kTarget, noise_, i).logits);
    }
  }
  void add_distance(Passes& passes, int64_t micro_batch, const PassOutput& first, DistanceSum& sum) const override {
    sum.add(passes.scratch(kKey).at(static_cast<size_t>(micro_batch)), first.logits, first.mask);
  }
  bool measurable_by_caller() const override { return true; }
  std::optional<NoiseOptions> noise() const override { return noise_; }
  void validate(const std::string& method) const override {
    TORCH_CHECK(noise_.sigma() >= 0 && std::isfinite(noise_.sigma()), method, ": invalid sigma: ", noise_.sigma(),
                " (the embedding noise scale must be >= 0)");
  }

 private:
  static constexpr const char* kKey = "noise-target";
  NoiseOptions noise_;
};
}  // namespace

std::shared_ptr<const Target> noise_target(NoiseOptions noise) { return std::make_shared<NoiseTarget>(noise); }
}  // namespace tram::policy
