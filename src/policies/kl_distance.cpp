// The trust-region KL (docs/ALGORITHMS.md §5): forward, reverse or symmetric,
// reduced by mean over valid rows, sum, or the released code's legacy
// normalisation. Per-row divergences are summed over micro-batches (and
// ranks) and reduced once, so the result is exactly that of the whole batch.
#include <tram/policies.h>

#include "policies/distance_rows.h"

namespace tram::policy {
namespace {
class KLSum final : public DistanceSum {
 public:
  KLSum(ops::Divergence divergence, ops::Reduction reduction) : divergence_(divergence), reduction_(reduction) {}

  void add(const torch::Tensor& target_logits, const torch::Tensor& current_logits,
           const torch::Tensor& mask) override {
    const torch::Tensor rows =
        ops::trust_region_divergence(target_logits, current_logits, divergence_, ops::Reduction::kNone, mask);
    const auto f64 = rows.options().dtype(torch::kFloat64);
    // The divergence sum and the valid rows stay on the device; value() reads them once.
    const torch::Tensor valid = mask.defined() ? mask.ne(0).sum().to(torch::kFloat64)
                                               : torch::full({}, static_cast<double>(rows.numel()), f64);
    const torch::Tensor both = torch::stack({rows.sum().to(torch::kFloat64), valid});
    sums_ = sums_.defined() ? sums_ + both : both;
    numel_ += static_cast<double>(current_logits.numel());
    leading_ += current_logits.dim() > 1 ? static_cast<double>(current_logits.size(0)) : 1.0;
  }

  // [divergence sum, valid rows, logit elements, leading size].
  torch::Tensor totals() const override {
    const torch::Tensor sums = sums_.defined() ? sums_ : torch::zeros({2}, torch::kFloat64);
    return torch::cat({sums, torch::tensor({numel_, leading_}, torch::kFloat64).to(sums.device())});
  }
  void set_totals(const torch::Tensor& totals) override { reduced_ = totals; }

  torch::Tensor distance() const override {
    // The ranks' sum when there is one, else this rank's totals; the same
    // float64 arithmetic a host-side reduction would do, on the device.
    const torch::Tensor values = (reduced_.defined() ? reduced_ : totals()).to(torch::kFloat64);
    const torch::Tensor sum = values[0], valid_rows = values[1], numel = values[2], leading = values[3];
    switch (reduction_) {
      case ops::Reduction::kSum: return sum;
      case ops::Reduction::kLegacy: return ratio_or_zero(sum / numel / leading, numel);
      default: return ratio_or_zero(sum / valid_rows, valid_rows);
    }
  }

 private:
  ops::Divergence divergence_;
  ops::Reduction reduction_;
  torch::Tensor sums_;     // [divergence sum, valid rows] on the logits' device
  torch::Tensor reduced_;  // totals() summed over ranks, when set
  double numel_ = 0, leading_ = 0;
};

class KLDistance final : public Distance {
 public:
  KLDistance(ops::Divergence divergence, ops::Reduction reduction) : divergence_(divergence), reduction_(reduction) {}
  std::unique_ptr<DistanceSum> start() const override { return std::make_unique<KLSum>(divergence_, reduction_); }

 private:
  ops::Divergence divergence_;
  ops::Reduction reduction_;
};
}  // namespace

std::shared_ptr<const Distance> kl_distance(ops::Divergence divergence, ops::Reduction reduction) {
  TORCH_CHECK(reduction != ops::Reduction::kNone, "tram: reduction=none gives one distance per row; the trust-region "
              "radius needs mean, sum or legacy");
  return std::make_shared<KLDistance>(divergence, reduction);
}
}  // namespace tram::policy
