// The trust-region KL (docs/ALGORITHMS.md §5): forward, reverse or symmetric,
// reduced by mean over valid rows, sum, or the released code's legacy
// normalisation. Per-row divergences are summed over micro-batches (and
// ranks) and reduced once, so the result is exactly that of the whole batch.
#include <tram/policies.h>

namespace tram::policy {
namespace {
class KLSum final : public DistanceSum {
 public:
  KLSum(ops::Divergence divergence, ops::Reduction reduction) : divergence_(divergence), reduction_(reduction) {}

  void add(const torch::Tensor& target_logits, const torch::Tensor& current_logits,
           const torch::Tensor& mask) override {
    const torch::Tensor rows =
        ops::trust_region_divergence(target_logits, current_logits, divergence_, ops::Reduction::kNone, mask);
    sum_ += rows.sum().item<double>();
    valid_rows_ += mask.defined() ? mask.ne(0).sum().item<double>() : static_cast<double>(rows.numel());
    numel_ += static_cast<double>(current_logits.numel());
    leading_ += current_logits.dim() > 1 ? static_cast<double>(current_logits.size(0)) : 1.0;
  }

  torch::Tensor totals() const override {
    return torch::tensor({sum_, valid_rows_, numel_, leading_}, torch::TensorOptions(torch::kFloat64));
  }

  void set_totals(const torch::Tensor& totals) override {
    const auto values = totals.cpu();
    sum_ = values[0].item<double>();
    valid_rows_ = values[1].item<double>();
    numel_ = values[2].item<double>();
    leading_ = values[3].item<double>();
  }

  double value() const override {
    switch (reduction_) {
      case ops::Reduction::kSum: return sum_;
      case ops::Reduction::kLegacy: return numel_ > 0 ? sum_ / numel_ / leading_ : 0.0;
      default: return valid_rows_ > 0 ? sum_ / valid_rows_ : 0.0;
    }
  }

 private:
  ops::Divergence divergence_;
  ops::Reduction reduction_;
  double sum_ = 0, valid_rows_ = 0, numel_ = 0, leading_ = 0;
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
