// TRAM-Fisher's trust region (docs/ALGORITHMS.md §6): pass 1 already ran on
// noised embeddings, so the target is the clean model, from one no-grad pass
// per micro-batch after pass 1: d = D(p(emb + z) || p(emb)).
#include <tram/policies.h>

namespace tram::policy {
namespace {
class CleanTarget final : public Target {
 public:
  void add_distance(Passes& passes, int64_t micro_batch, const PassOutput& first, DistanceSum& sum) const override {
    sum.add(first.logits, passes.run(PassKind::kTarget, std::nullopt, micro_batch).logits, first.mask);
  }
};
}  // namespace

std::shared_ptr<const Target> clean_target() { return std::make_shared<CleanTarget>(); }
}  // namespace tram::policy
