// The MMD trust-region distance (the paper's Table 14, the released kl.py):
// the biased estimate with the rows as samples, x the target's logits and y
// pass 1's,
//   d = mean_{i,j} ( k(x_i, x_j) + k(y_i, y_j) - 2 k(x_i, y_j) ),
// k summed over the bandwidths {0.1, 0.2, 0.5, 1, 2, 5, 10} of s = ||u - v||^2.
// It compares every pair of rows, so the rows of all micro-batches are kept
// and the estimate is computed once, from n x n kernel matrices: O(n^2 C).
#include <tram/policies.h>

#include "policies/distance_rows.h"

#include <array>
#include <vector>

namespace tram::policy {
namespace {

// n x n kernel matrices in the accumulation dtype: 4096 rows take 64 MiB each
// in fp32. More is refused with the row count rather than risking the memory.
constexpr int64_t kMaxRows = 4096;
constexpr std::array<double, 7> kBandwidths = {0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0};

// Squared distances between the rows of a and b, never negative.
torch::Tensor squared_distances(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor a2 = a.pow(2).sum(1, /*keepdim=*/true), b2 = b.pow(2).sum(1, /*keepdim=*/true);
  return (a2 + b2.t() - 2 * a.mm(b.t())).clamp_min(0);
}

torch::Tensor kernel_sum(const torch::Tensor& s, MMDKernel kernel) {
  torch::Tensor sum = torch::zeros_like(s);
  for (const double b : kBandwidths) {
    switch (kernel) {
      case MMDKernel::kIMQ2: sum += (s + b * b).rsqrt(); break;
      case MMDKernel::kIMQ: sum += b / (s + b); break;
      case MMDKernel::kIMQ3: sum += (b * b) / (s + b * b); break;
      case MMDKernel::kRBF: sum += (-s / (2 * b)).exp(); break;
    }
  }
  return sum;
}

class MMDSum final : public DistanceSum {
 public:
  MMDSum(MMDKernel kernel, ops::Reduction reduction) : kernel_(kernel), reduction_(reduction) {}

  void add(const torch::Tensor& target_logits, const torch::Tensor& current_logits,
           const torch::Tensor& mask) override {
    TORCH_CHECK(target_logits.sizes() == current_logits.sizes(), "TRAM (divergence=mmd): target logits of shape ",
                target_logits.sizes(), " and current logits of shape ", current_logits.sizes(), " differ");
    const auto dtype = distance_dtype(target_logits, current_logits);
    targets_.push_back(valid_rows(target_logits, mask, dtype));
    currents_.push_back(valid_rows(current_logits, mask, dtype));
    rows_ += currents_.back().size(0);
    leading_ += leading_size(current_logits);
    TORCH_CHECK(rows_ <= kMaxRows, "TRAM (divergence=mmd): the batch has ", rows_,
                " valid prediction rows; the MMD compares every pair of them and supports at most ", kMaxRows,
                " (use a smaller batch or a mask, or divergence=l2 / a KL, which are linear in the rows)");
  }

  torch::Tensor totals() const override {
    TORCH_CHECK(false, "TRAM (divergence=mmd): the MMD of the whole batch needs every rank's rows and cannot be "
                "summed over data-parallel ranks; use divergence=l2 or a KL with a process group");
  }
  void set_totals(const torch::Tensor&) override { totals(); }

  torch::Tensor distance() const override {
    if (rows_ == 0) return torch::zeros({}, torch::kFloat64);
    const torch::Tensor x = torch::cat(targets_), y = torch::cat(currents_);
    const torch::Tensor estimate = kernel_sum(squared_distances(x, x), kernel_).mean() +
                                   kernel_sum(squared_distances(y, y), kernel_).mean() -
                                   2 * kernel_sum(squared_distances(x, y), kernel_).mean();
    const torch::Tensor mmd = estimate.to(torch::kFloat64);
    return reduction_ == ops::Reduction::kLegacy ? mmd / leading_ : mmd;
  }

 private:
  MMDKernel kernel_;
  ops::Reduction reduction_;
  std::vector<torch::Tensor> targets_, currents_;
  int64_t rows_ = 0;
  double leading_ = 0;
};

class MMDDistance final : public Distance {
 public:
  MMDDistance(MMDKernel kernel, ops::Reduction reduction) : kernel_(kernel), reduction_(reduction) {}
  std::unique_ptr<DistanceSum> start() const override { return std::make_unique<MMDSum>(kernel_, reduction_); }

 private:
  MMDKernel kernel_;
  ops::Reduction reduction_;
};
}  // namespace

std::shared_ptr<const Distance> mmd_distance(MMDKernel kernel, ops::Reduction reduction) {
  TORCH_CHECK(reduction == ops::Reduction::kMean || reduction == ops::Reduction::kLegacy,
              "TRAM (divergence=mmd): invalid reduction ", ops::to_string(reduction),
              " (the MMD is a mean over pairs of rows: use mean, or legacy to divide by the batch size once more)");
  return std::make_shared<MMDDistance>(kernel, reduction);
}
}  // namespace tram::policy
