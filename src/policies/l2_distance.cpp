// The L2 trust-region distance (the paper's Table 14, the released kl.py):
// d = mean over valid rows of ||y_row - x_row||_2 on the logits (not the
// probabilities), x the target's and y pass 1's. Decomposes over micro-batches
// and ranks: row norms and counts are summed, the mean taken once.
#include <tram/policies.h>

#include "policies/distance_rows.h"

namespace tram::policy {
namespace {
class L2Sum final : public DistanceSum {
 public:
  explicit L2Sum(ops::Reduction reduction) : reduction_(reduction) {}

  void add(const torch::Tensor& target_logits, const torch::Tensor& current_logits,
           const torch::Tensor& mask) override {
    TORCH_CHECK(target_logits.sizes() == current_logits.sizes(), "TRAM (divergence=l2): target logits of shape ",
                target_logits.sizes(), " and current logits of shape ", current_logits.sizes(), " differ");
    const auto dtype = distance_dtype(target_logits, current_logits);
    const torch::Tensor difference = valid_rows(current_logits, mask, dtype) - valid_rows(target_logits, mask, dtype);
    // The norm sum stays on the device; value() reads it once.
    const torch::Tensor norms = difference.norm(2, {1}).sum().to(torch::kFloat64);
    sum_ = sum_.defined() ? sum_ + norms : norms;
    rows_ += static_cast<double>(difference.size(0));
    leading_ += leading_size(current_logits);
  }

  // [norm sum, rows, leading size].
  torch::Tensor totals() const override {
    const torch::Tensor sum = sum_.defined() ? sum_.reshape({1}) : torch::zeros({1}, torch::kFloat64);
    return torch::cat({sum, torch::tensor({rows_, leading_}, torch::kFloat64).to(sum.device())});
  }
  void set_totals(const torch::Tensor& totals) override { reduced_ = totals; }

  torch::Tensor distance() const override {
    // The ranks' sum when there is one, else this rank's totals (on the device).
    const torch::Tensor values = (reduced_.defined() ? reduced_ : totals()).to(torch::kFloat64);
    const torch::Tensor sum = values[0], rows = values[1], leading = values[2];
    if (reduction_ == ops::Reduction::kSum) return sum;
    const torch::Tensor mean = ratio_or_zero(sum / rows, rows);
    return reduction_ == ops::Reduction::kLegacy ? ratio_or_zero(mean / leading, leading) : mean;
  }

 private:
  ops::Reduction reduction_;
  torch::Tensor sum_;      // on the logits' device
  torch::Tensor reduced_;  // totals() summed over ranks, when set
  double rows_ = 0, leading_ = 0;
};

class L2Distance final : public Distance {
 public:
  explicit L2Distance(ops::Reduction reduction) : reduction_(reduction) {}
  std::unique_ptr<DistanceSum> start() const override { return std::make_unique<L2Sum>(reduction_); }

 private:
  ops::Reduction reduction_;
};
}  // namespace

std::shared_ptr<const Distance> l2_distance(ops::Reduction reduction) {
  TORCH_CHECK(reduction != ops::Reduction::kNone, "TRAM (divergence=l2): reduction=none gives one distance per row; "
              "the trust-region radius needs mean, sum or legacy");
  return std::make_shared<L2Distance>(reduction);
}
}  // namespace tram::policy
