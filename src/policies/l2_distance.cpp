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
    sum_ += difference.norm(2, {1}).sum().item<double>();
    rows_ += static_cast<double>(difference.size(0));
    leading_ += leading_size(current_logits);
  }

  torch::Tensor totals() const override {
    return torch::tensor({sum_, rows_, leading_}, torch::TensorOptions(torch::kFloat64));
  }
  void set_totals(const torch::Tensor& totals) override {
    const auto values = totals.cpu();
    sum_ = values[0].item<double>();
    rows_ = values[1].item<double>();
    leading_ = values[2].item<double>();
  }

  double value() const override {
    if (reduction_ == ops::Reduction::kSum) return sum_;
    const double mean = rows_ > 0 ? sum_ / rows_ : 0.0;
    return reduction_ == ops::Reduction::kLegacy && leading_ > 0 ? mean / leading_ : mean;
  }

 private:
  ops::Reduction reduction_;
  double sum_ = 0, rows_ = 0, leading_ = 0;
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
