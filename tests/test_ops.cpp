// Tests of the reference implementation of tram::ops (include/tram/ops.h)
// against formulas written out in the tests: docs/ALGORITHMS.md §5 (the trust-region
// divergence and its gradient) and §2 (the multi-tensor ascent ops).
#include <tram/ops.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

using torch::Tensor;
using tram::ops::AscentSpec;
using tram::ops::Divergence;
using tram::ops::Reduction;
using tram::ops::Scaling;

const std::vector<Divergence> kDivergences = {Divergence::kForward, Divergence::kReverse,
                                              Divergence::kSymmetric};
const std::vector<Reduction> kReductions = {Reduction::kNone, Reduction::kMean, Reduction::kSum,
                                            Reduction::kLegacy};
const std::vector<Scaling> kScalings = {Scaling::kIdentity, Scaling::kAdaptive, Scaling::kFisher,
                                        Scaling::kReleasedIdentity, Scaling::kReleasedAdaptive};
const std::vector<torch::ScalarType> kFloatingDtypes = {torch::kDouble, torch::kFloat, torch::kHalf,
                                                        torch::kBFloat16};
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();




std::string describe(const Tensor& t) {
  std::ostringstream out;
  out << t.scalar_type() << t.sizes() << (t.is_contiguous() ? "" : " non-contiguous");
  return out.str();
}

// Element-wise |actual - expected| <= atol + rtol |expected| after widening
// both to fp64, with equal shapes; infinities must match exactly, NaN fails.
void expect_close(const Tensor& actual, const Tensor& expected, double rtol, double atol) {
  ASSERT_EQ(actual.sizes(), expected.sizes());
  const Tensor a = actual.to(torch::kDouble);
  const Tensor e = expected.to(torch::kDouble);
  const Tensor close = torch::isclose(a, e, rtol, atol);
  if (!close.all().item<bool>()) {
    const Tensor error = torch::where(close, torch::zeros_like(a), (a - e).abs());
    ADD_FAILURE() << "not close (rtol " << rtol << ", atol " << atol
                  << "): " << (~close).sum().item<int64_t>() << " of " << a.numel()
                  << " elements differ, largest difference "
                  << error.nan_to_num(kInf).max().item<double>()
                  << "\nactual:   " << a.flatten().slice(0, 0, 8)
                  << "\nexpected: " << e.flatten().slice(0, 0, 8);
  }
}

// Close to fp64 `expected` within `rtol` relative to its largest finite
// magnitude, or within `floor` (the subnormal step of a narrow dtype).
void expect_close_relative_to_scale(const Tensor& actual, const Tensor& expected, double rtol,
                                    double floor = 1e-300) {
  const Tensor e = expected.to(torch::kDouble);
  const Tensor finite = e.masked_select(torch::isfinite(e));
  const double scale = finite.numel() > 0 ? finite.abs().max().item<double>() : 0.0;
  expect_close(actual, e, rtol, rtol * scale + floor);
}

// Same bit patterns (NaN payloads and signed zeros included).
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  const auto as_integers = [](const Tensor& t) {
    const Tensor dense = t.detach().contiguous();
    switch (t.element_size()) {
      case 2: return dense.view(torch::kInt16);
      case 4: return dense.view(torch::kInt32);
      default: return dense.view(torch::kInt64);
    }
  };
  return torch::equal(as_integers(a), as_integers(b));
}

template <class Call>
void expect_error_mentioning(Call call, const std::vector<std::string>& fragments) {
  try {
    call();
    ADD_FAILURE() << "expected a c10::Error mentioning \"" << fragments.front() << "\"";
  } catch (const c10::Error& error) {
    const std::string message = error.what_without_backtrace();
    for (const auto& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "message lacks \"" << fragment << "\": " << message;
    }
  }
}

// ===========================================================================
// Trust-region divergence: references
// ===========================================================================

// log p_c = z_c - max - log(sum_k exp(z_k - max)) for one row, in doubles.
std::vector<double> definition_log_probs(const double* logits, int64_t classes) {
  double max = -kInf;
  for (int64_t c = 0; c < classes; ++c) max = std::max(max, logits[c]);
  double sum = 0.0;
  for (int64_t c = 0; c < classes; ++c) sum += std::exp(logits[c] - max);
  std::vector<double> log_probs(classes);
  for (int64_t c = 0; c < classes; ++c) log_probs[c] = logits[c] - max - std::log(sum);
  return log_probs;
}

// sum_c p_c (log p_c - log q_c); classes with p_c = 0 contribute 0.
double definition_kl(const std::vector<double>& log_p, const std::vector<double>& log_q) {
  double kl = 0.0;
  for (size_t c = 0; c < log_p.size(); ++c) {
    const double p = std::exp(log_p[c]);
    if (p != 0.0) kl += p * (log_p[c] - log_q[c]);
  }
  return kl;
}

// The divergence straight from docs/ALGORITHMS.md §5 in plain double arithmetic, row by row.
Tensor definition_divergence(const Tensor& target_logits, const Tensor& current_logits,
                             Divergence divergence, Reduction reduction, const Tensor& mask = {}) {
  const int64_t classes = target_logits.size(-1);
  const Tensor target = target_logits.to(torch::kDouble).reshape({-1, classes}).contiguous();
  const Tensor current = current_logits.to(torch::kDouble).reshape({-1, classes}).contiguous();
  const int64_t rows = target.size(0);
  const Tensor valid =
      mask.defined() ? (mask.reshape({-1}) != 0) : torch::ones({rows}, torch::kBool);
  auto per_row = torch::zeros({rows}, torch::kDouble);
  double sum = 0.0;
  int64_t valid_count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (!valid[r].item<bool>()) continue;
    const auto log_t = definition_log_probs(target[r].data_ptr<double>(), classes);
    const auto log_c = definition_log_probs(current[r].data_ptr<double>(), classes);
    double d = 0.0;
    if (divergence != Divergence::kReverse) d += definition_kl(log_t, log_c);
    if (divergence != Divergence::kForward) d += definition_kl(log_c, log_t);
    per_row[r] = d;
    sum += d;
    ++valid_count;
  }
  switch (reduction) {
    case Reduction::kNone:
      return per_row.reshape(target_logits.sizes().slice(0, target_logits.dim() - 1));
    case Reduction::kMean:
      return torch::tensor(valid_count > 0 ? sum / valid_count : 0.0, torch::kDouble);
    case Reduction::kSum: return torch::tensor(sum, torch::kDouble);
    case Reduction::kLegacy: {
      const double batch = target_logits.dim() >= 2 ? target_logits.size(0) : 1;
      return torch::tensor(sum / target_logits.numel() / batch, torch::kDouble);
    }
  }
  return {};
}

// A plain composite of ATen ops whose autograd gradient the custom backward
// must reproduce (inputs without -inf, masks as bool).
Tensor composite_divergence(const Tensor& target_logits, const Tensor& current_logits,
                            Divergence divergence, Reduction reduction, const Tensor& mask) {
  const Tensor log_t = torch::log_softmax(target_logits, -1);
  const Tensor log_c = torch::log_softmax(current_logits, -1);
  Tensor rows = torch::zeros(target_logits.sizes().slice(0, target_logits.dim() - 1),
                             target_logits.options());
  if (divergence != Divergence::kReverse) rows = rows + (log_t.exp() * (log_t - log_c)).sum(-1);
  if (divergence != Divergence::kForward) rows = rows + (log_c.exp() * (log_c - log_t)).sum(-1);
  Tensor count = torch::tensor(static_cast<double>(rows.numel()), torch::kDouble);
  if (mask.defined()) {
    rows = torch::where(mask, rows, torch::zeros_like(rows));
    count = mask.sum().to(torch::kDouble);
  }
  switch (reduction) {
    case Reduction::kNone: return rows;
    case Reduction::kMean: return rows.sum() / count;
    case Reduction::kSum: return rows.sum();
    case Reduction::kLegacy:
      return rows.sum() / static_cast<double>(target_logits.numel()) /
             static_cast<double>(target_logits.size(0));
  }
  return {};
}

// Target logits and current logits that differ by O(1) noise, so every
// per-row divergence is O(1) and relative tolerances are meaningful.
struct LogitPair {
  Tensor target;
  Tensor current;
};

LogitPair random_logits(torch::IntArrayRef shape, torch::ScalarType dtype, double scale = 2.0) {
  const Tensor target = scale * torch::randn(shape, torch::kDouble);
  const Tensor current = target + torch::randn(shape, torch::kDouble);
  return {target.to(dtype), current.to(dtype)};
}

// Every third row masked out, as a bool mask of the rows' shape.
Tensor every_third_row_masked(torch::IntArrayRef logits_shape) {
  const auto row_shape = logits_shape.slice(0, logits_shape.size() - 1);
  int64_t rows = 1;
  for (int64_t s : row_shape) rows *= s;
  return (torch::arange(rows) % 3 != 1).reshape(row_shape);
}

// Random upstream gradient of the op's output (a scalar for reductions).
Tensor random_upstream(const Tensor& output) { return torch::rand_like(output) + 0.5; }

// ===========================================================================
// Trust-region divergence: forward
// ===========================================================================

TEST(TrustRegionDivergence, MatchesFloat64DefinitionForEveryDirectionReductionDtypeAndShape) {
  torch::manual_seed(1);
  const std::vector<std::vector<int64_t>> shapes = {{13, 7}, {3, 5, 101}};
  for (const auto dtype : kFloatingDtypes) {
    // fp16/bf16 inputs are widened exactly and accumulated in fp32, so they
    // meet the fp32 tolerance against a reference fed the same rounded logits.
    const double rtol = dtype == torch::kDouble ? 1e-12 : 1e-5;
    const auto result_dtype = dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
    for (const auto& shape : shapes) {
      const auto logits = random_logits(shape, dtype);
      const Tensor bool_mask = every_third_row_masked(shape);
      const Tensor float_mask = bool_mask.to(torch::kFloat) * 3.0;  // nonzero = valid
      for (const Tensor& mask : {Tensor(), bool_mask, float_mask}) {
        for (const auto divergence : kDivergences) {
          for (const auto reduction : kReductions) {
            SCOPED_TRACE(describe(logits.target) + " " + tram::ops::to_string(divergence) + " " + tram::ops::to_string(reduction) +
                         (mask.defined() ? " masked " + describe(mask) : ""));
            const Tensor result = tram::ops::trust_region_divergence(logits.target, logits.current,
                                                                     divergence, reduction, mask);
            EXPECT_EQ(result.scalar_type(), result_dtype);
            const Tensor expected =
                definition_divergence(logits.target, logits.current, divergence, reduction, mask);
            expect_close_relative_to_scale(result, expected, rtol);
          }
        }
      }
    }
  }
}

TEST(TrustRegionDivergence, DefaultsAreForwardKlMeanOverRows) {
  torch::manual_seed(2);
  const auto logits = random_logits({6, 11}, torch::kFloat);
  const Tensor result = tram::ops::trust_region_divergence(logits.target, logits.current);
  EXPECT_EQ(result.dim(), 0);
  expect_close(
      result,
      definition_divergence(logits.target, logits.current, Divergence::kForward, Reduction::kMean),
      1e-5, 0.0);
}

TEST(TrustRegionDivergence, HandlesLogitsOfMagnitude1e4) {
  torch::manual_seed(3);
  // Saturated softmaxes: log(softmax) would give log(0) = -inf and an
  // infinite divergence; log-sum-exp keeps the (large, finite) true value.
  const std::vector<int64_t> shape = {4, 6, 33};
  const Tensor target = 1e4 * torch::sign(torch::randn(shape, torch::kDouble));
  const Tensor current = 1e4 * torch::randn(shape, torch::kDouble);
  for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16, torch::kDouble}) {
    for (const auto divergence : kDivergences) {
      for (const auto reduction : kReductions) {
        SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + tram::ops::to_string(divergence) + " " +
                     tram::ops::to_string(reduction));
        const Tensor t = target.to(dtype);
        const Tensor c = current.to(dtype);
        const Tensor result = tram::ops::trust_region_divergence(t, c, divergence, reduction);
        EXPECT_TRUE(torch::isfinite(result).all().item<bool>());
        expect_close_relative_to_scale(result, definition_divergence(t, c, divergence, reduction),
                                       dtype == torch::kDouble ? 1e-12 : 1e-5);
      }
    }
  }
}

TEST(TrustRegionDivergence, TargetClassesWithNegativeInfinityContributeZero) {
  torch::manual_seed(4);
  const int64_t kept_classes = 5;
  const auto kept = random_logits({6, kept_classes}, torch::kDouble);
  // Two extra classes that the target rules out (-inf logits).
  const Tensor ruled_out = torch::full({6, 2}, -kInf, torch::kDouble);
  const Tensor target = torch::cat({kept.target, ruled_out}, -1);
  for (const auto dtype : {torch::kFloat, torch::kDouble}) {
    SCOPED_TRACE(c10::toString(dtype));
    const double rtol = dtype == torch::kDouble ? 1e-12 : 1e-5;
    // Current also rules them out: every divergence equals the divergence
    // over the kept classes alone.
    const Tensor current_same_support = torch::cat({kept.current, ruled_out}, -1);
    for (const auto divergence : kDivergences) {
      SCOPED_TRACE(tram::ops::to_string(divergence));
      const Tensor result = tram::ops::trust_region_divergence(
          target.to(dtype), current_same_support.to(dtype), divergence, Reduction::kNone);
      expect_close(result,
                   definition_divergence(kept.target, kept.current, divergence, Reduction::kNone),
                   rtol, 0.0);
    }
    // Current puts mass on them: KL(target || current) is finite (p_t = 0
    // there), KL(current || target) is +inf, which is the true value.
    const Tensor current_wider =
        torch::cat({kept.current, torch::zeros({6, 2}, torch::kDouble)}, -1);
    const Tensor forward = tram::ops::trust_region_divergence(
        target.to(dtype), current_wider.to(dtype), Divergence::kForward, Reduction::kNone);
    expect_close(
        forward,
        definition_divergence(target, current_wider, Divergence::kForward, Reduction::kNone), rtol,
        0.0);
    EXPECT_TRUE(torch::isfinite(forward).all().item<bool>());
    const Tensor reverse = tram::ops::trust_region_divergence(
        target.to(dtype), current_wider.to(dtype), Divergence::kReverse, Reduction::kNone);
    EXPECT_TRUE((reverse == kInf).all().item<bool>()) << reverse;
    // Gradients of the finite direction stay finite and are 0 on the ruled-out
    // target classes.
    const Tensor target_leaf = target.to(dtype).requires_grad_();
    const Tensor current_leaf = current_wider.to(dtype).requires_grad_();
    tram::ops::trust_region_divergence(target_leaf, current_leaf).backward();
    EXPECT_TRUE(torch::isfinite(target_leaf.grad()).all().item<bool>());
    EXPECT_TRUE(torch::isfinite(current_leaf.grad()).all().item<bool>());
    EXPECT_TRUE((target_leaf.grad().slice(-1, kept_classes) == 0).all().item<bool>());
  }
}

TEST(TrustRegionDivergence, MaskedRowsMayHoldNonFiniteValues) {
  torch::manual_seed(5);
  const std::vector<int64_t> shape = {2, 9, 17};
  for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kDouble}) {
    const auto clean = random_logits(shape, dtype);
    const Tensor mask = every_third_row_masked(shape);
    // Masked rows get NaN, +inf and -inf (whole rows of -inf too).
    const Tensor poison = torch::tensor({kNaN, kInf, -kInf}, torch::kDouble)
                              .index({torch::arange(shape[0] * shape[1]) % 3})
                              .reshape({shape[0], shape[1], 1})
                              .expand(shape)
                              .to(dtype);
    const Tensor row_is_valid = mask.unsqueeze(-1);
    const Tensor target = torch::where(row_is_valid, clean.target, poison);
    const Tensor current = torch::where(row_is_valid, clean.current, poison.flip({0}));
    for (const auto divergence : kDivergences) {
      for (const auto reduction : kReductions) {
        SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + tram::ops::to_string(divergence) + " " +
                     tram::ops::to_string(reduction));
        const Tensor target_leaf = target.clone().requires_grad_();
        const Tensor current_leaf = current.clone().requires_grad_();
        const Tensor result = tram::ops::trust_region_divergence(target_leaf, current_leaf,
                                                                 divergence, reduction, mask);
        // Same value as on clean logits: the poisoned rows never leak.
        const Tensor on_clean = tram::ops::trust_region_divergence(clean.target, clean.current,
                                                                   divergence, reduction, mask);
        EXPECT_TRUE(torch::equal(result.detach(), on_clean)) << result << on_clean;
        if (reduction == Reduction::kNone) {
          EXPECT_TRUE((result.detach().masked_select(~mask) == 0).all().item<bool>());
        }
        result.backward(random_upstream(result));
        for (const Tensor& grad : {target_leaf.grad(), current_leaf.grad()}) {
          EXPECT_TRUE(torch::isfinite(grad).all().item<bool>());
          EXPECT_TRUE((grad.masked_select(~row_is_valid) == 0).all().item<bool>());
          EXPECT_TRUE((grad.masked_select(row_is_valid) != 0).any().item<bool>());
        }
      }
    }
  }
}

TEST(TrustRegionDivergence, EmptyAndFullyMaskedBatchesGiveZero) {
  const Tensor no_rows = torch::randn({0, 7}).requires_grad_();
  const Tensor no_positions = torch::randn({2, 0, 5});
  const auto finite_rows = random_logits({4, 3}, torch::kFloat);
  const Tensor all_masked = torch::zeros({4}, torch::kBool);
  for (const auto divergence : kDivergences) {
    SCOPED_TRACE(tram::ops::to_string(divergence));
    for (const auto reduction : {Reduction::kMean, Reduction::kSum, Reduction::kLegacy}) {
      SCOPED_TRACE(tram::ops::to_string(reduction));
      const Tensor empty =
          tram::ops::trust_region_divergence(no_rows, no_rows, divergence, reduction);
      EXPECT_EQ(empty.dim(), 0);
      EXPECT_EQ(empty.item<double>(), 0.0);
      const Tensor masked = tram::ops::trust_region_divergence(
          finite_rows.target, finite_rows.current, divergence, reduction, all_masked);
      EXPECT_EQ(masked.item<double>(), 0.0);
      empty.backward();
      ASSERT_TRUE(no_rows.grad().defined());
      EXPECT_EQ(no_rows.grad().sizes(), no_rows.sizes());
    }
    EXPECT_EQ(tram::ops::trust_region_divergence(no_rows, no_rows, divergence, Reduction::kNone)
                  .sizes()
                  .vec(),
              std::vector<int64_t>({0}));
    EXPECT_EQ(
        tram::ops::trust_region_divergence(no_positions, no_positions, divergence, Reduction::kNone)
            .sizes()
            .vec(),
        std::vector<int64_t>({2, 0}));
  }
}

TEST(TrustRegionDivergence, OneDimensionalLogitsAreASingleRow) {
  torch::manual_seed(6);
  const auto logits = random_logits({9}, torch::kDouble);
  const Tensor per_row = tram::ops::trust_region_divergence(logits.target, logits.current,
                                                            Divergence::kForward, Reduction::kNone);
  EXPECT_EQ(per_row.dim(), 0);
  const double kl = definition_divergence(logits.target.unsqueeze(0), logits.current.unsqueeze(0),
                                          Divergence::kForward, Reduction::kSum)
                        .item<double>();
  EXPECT_NEAR(per_row.item<double>(), kl, 1e-12 * kl);
  // Legacy: numel = classes and the "batch" is one row.
  const Tensor legacy = tram::ops::trust_region_divergence(
      logits.target, logits.current, Divergence::kForward, Reduction::kLegacy);
  EXPECT_NEAR(legacy.item<double>(), kl / 9.0, 1e-12 * kl);
}

TEST(TrustRegionDivergence, LegacyDividesBySizeOfLogitsAndBatch) {
  // The released code: F.kl_div(reduction="mean") [= sum / (rows * classes)],
  // then / x.size(0). For [B, T, V] logits the factor is B * T * V * B.
  torch::manual_seed(7);
  const auto logits = random_logits({3, 4, 10}, torch::kDouble);
  const double sum = tram::ops::trust_region_divergence(logits.target, logits.current,
                                                        Divergence::kForward, Reduction::kSum)
                         .item<double>();
  const double legacy = tram::ops::trust_region_divergence(logits.target, logits.current,
                                                           Divergence::kForward, Reduction::kLegacy)
                            .item<double>();
  EXPECT_NEAR(legacy, sum / (3.0 * 4.0 * 10.0) / 3.0, 1e-14 * sum);
}

// ===========================================================================
// Trust-region divergence: backward
// ===========================================================================

struct Gradients {
  Tensor target;
  Tensor current;
};

Gradients op_gradients(const Tensor& target, const Tensor& current, Divergence divergence,
                       Reduction reduction, const Tensor& mask, const Tensor& upstream) {
  const Tensor target_leaf = target.detach().clone().requires_grad_();
  const Tensor current_leaf = current.detach().clone().requires_grad_();
  const Tensor output =
      tram::ops::trust_region_divergence(target_leaf, current_leaf, divergence, reduction, mask);
  const auto grads = torch::autograd::grad({output}, {target_leaf, current_leaf}, {upstream});
  return {grads[0], grads[1]};
}

TEST(TrustRegionDivergence, BackwardMatchesAutogradOfCompositeInFloat64) {
  torch::manual_seed(8);
  const std::vector<std::vector<int64_t>> shapes = {{13, 7}, {3, 5, 101}};
  for (const auto& shape : shapes) {
    const auto logits = random_logits(shape, torch::kDouble);
    for (const Tensor& mask : {Tensor(), every_third_row_masked(shape)}) {
      for (const auto divergence : kDivergences) {
        for (const auto reduction : kReductions) {
          SCOPED_TRACE(describe(logits.target) + " " + tram::ops::to_string(divergence) + " " + tram::ops::to_string(reduction) +
                       (mask.defined() ? " masked" : ""));
          const Tensor probe =
              composite_divergence(logits.target, logits.current, divergence, reduction, mask);
          const Tensor upstream = random_upstream(probe);
          const Gradients op =
              op_gradients(logits.target, logits.current, divergence, reduction, mask, upstream);

          const Tensor target_leaf = logits.target.clone().requires_grad_();
          const Tensor current_leaf = logits.current.clone().requires_grad_();
          const Tensor composite =
              composite_divergence(target_leaf, current_leaf, divergence, reduction, mask);
          const auto expected =
              torch::autograd::grad({composite}, {target_leaf, current_leaf}, {upstream});
          EXPECT_EQ(op.target.scalar_type(), torch::kDouble);
          expect_close_relative_to_scale(op.target, expected[0], 1e-10);
          expect_close_relative_to_scale(op.current, expected[1], 1e-10);
        }
      }
    }
  }
}

TEST(TrustRegionDivergence, BackwardMatchesCentralFiniteDifferences) {
  torch::manual_seed(9);
  const std::vector<int64_t> shape = {2, 3, 6};
  const auto logits = random_logits(shape, torch::kDouble);
  const Tensor mask = every_third_row_masked(shape);
  const double step = 1e-6;
  for (const Tensor& row_mask : {Tensor(), mask}) {
    for (const auto divergence : kDivergences) {
      for (const auto reduction : kReductions) {
        SCOPED_TRACE(std::string(tram::ops::to_string(divergence)) + " " + tram::ops::to_string(reduction) +
                     (row_mask.defined() ? " masked" : ""));
        // Scalar loss sum(upstream * output) so kNone is covered too.
        const Tensor upstream = random_upstream(tram::ops::trust_region_divergence(
            logits.target, logits.current, divergence, reduction, row_mask));
        const auto loss = [&](const Tensor& target, const Tensor& current) {
          return (upstream * tram::ops::trust_region_divergence(target, current, divergence,
                                                                reduction, row_mask))
              .sum()
              .item<double>();
        };
        const Gradients analytic =
            op_gradients(logits.target, logits.current, divergence, reduction, row_mask, upstream);
        const double scale = std::max(analytic.target.abs().max().item<double>(),
                                      analytic.current.abs().max().item<double>());
        for (const bool wrt_target : {true, false}) {
          const Tensor& grad = wrt_target ? analytic.target : analytic.current;
          const Tensor flat_grad = grad.reshape({-1});
          // A few random elements, plus one of a masked row (gradient 0).
          std::vector<int64_t> elements = {0, 7, 19, 30, 35};
          for (const int64_t element : elements) {
            Tensor plus_target = logits.target.clone(), minus_target = logits.target.clone();
            Tensor plus_current = logits.current.clone(), minus_current = logits.current.clone();
            Tensor& plus = wrt_target ? plus_target : plus_current;
            Tensor& minus = wrt_target ? minus_target : minus_current;
            plus.view({-1})[element] += step;
            minus.view({-1})[element] -= step;
            const double numeric =
                (loss(plus_target, plus_current) - loss(minus_target, minus_current)) / (2 * step);
            EXPECT_NEAR(flat_grad[element].item<double>(), numeric, 1e-6 * scale)
                << (wrt_target ? "target" : "current") << " element " << element;
          }
        }
      }
    }
  }
}

TEST(TrustRegionDivergence, GradientsHaveInputDtypesAndMatchFloat64) {
  torch::manual_seed(10);
  const std::vector<int64_t> shape = {4, 5, 31};
  const Tensor mask = every_third_row_masked(shape);
  // (target dtype, current dtype): a no-grad fp32 target against bf16 logits
  // is how mixed-precision training calls it.
  const std::vector<std::pair<torch::ScalarType, torch::ScalarType>> dtype_pairs = {
      {torch::kFloat, torch::kFloat},
      {torch::kHalf, torch::kHalf},
      {torch::kBFloat16, torch::kBFloat16},
      {torch::kFloat, torch::kBFloat16}};
  for (const auto& [target_dtype, current_dtype] : dtype_pairs) {
    const auto logits = random_logits(shape, torch::kDouble);
    const Tensor target = logits.target.to(target_dtype);
    const Tensor current = logits.current.to(current_dtype);
    for (const auto divergence : kDivergences) {
      for (const auto reduction : kReductions) {
        SCOPED_TRACE(std::string(c10::toString(target_dtype)) + "/" + c10::toString(current_dtype) +
                     " " + tram::ops::to_string(divergence) + " " + tram::ops::to_string(reduction));
        const Tensor probe =
            tram::ops::trust_region_divergence(target, current, divergence, reduction, mask);
        EXPECT_EQ(probe.scalar_type(), torch::kFloat);
        const Tensor upstream = random_upstream(probe);
        const Gradients op = op_gradients(target, current, divergence, reduction, mask, upstream);
        EXPECT_EQ(op.target.scalar_type(), target_dtype);
        EXPECT_EQ(op.current.scalar_type(), current_dtype);
        // Reference: fp64 gradients of the same rounded logits; the op is off
        // by the final rounding to the input dtype (1 ulp = 2^-10 fp16, 2^-7 bf16).
        const Gradients exact =
            op_gradients(target.to(torch::kDouble), current.to(torch::kDouble), divergence,
                         reduction, mask, upstream.to(torch::kDouble));
        // fp16 gradients of the legacy reduction are subnormal (step 2^-24).
        const auto tolerance = [](torch::ScalarType dtype) {
          return dtype == torch::kHalf ? 1e-3 : dtype == torch::kBFloat16 ? 8e-3 : 1e-5;
        };
        const auto floor = [](torch::ScalarType dtype) {
          return dtype == torch::kHalf ? 6e-8 : 1e-300;
        };
        expect_close_relative_to_scale(op.target, exact.target, tolerance(target_dtype),
                                       floor(target_dtype));
        expect_close_relative_to_scale(op.current, exact.current, tolerance(current_dtype),
                                       floor(current_dtype));
      }
    }
  }
}

TEST(TrustRegionDivergence, OnlyInputsThatRequireGradReceiveOne) {
  torch::manual_seed(11);
  const auto logits = random_logits({5, 8}, torch::kFloat);
  const Tensor current = logits.current.clone().requires_grad_();
  // The TRAM target pass runs under no-grad: its logits carry no graph.
  const Tensor d = tram::ops::trust_region_divergence(logits.target, current);
  EXPECT_TRUE(d.requires_grad());
  d.backward();
  EXPECT_FALSE(logits.target.grad().defined());
  ASSERT_TRUE(current.grad().defined());
  // dD/dz_current = (p_c - p_t) / rows for the mean forward KL.
  const Tensor expected = (torch::softmax(logits.current.to(torch::kDouble), -1) -
                           torch::softmax(logits.target.to(torch::kDouble), -1)) /
                          5.0;
  expect_close_relative_to_scale(current.grad(), expected, 1e-5);
  // Nothing requires grad: a plain value, no graph.
  EXPECT_FALSE(tram::ops::trust_region_divergence(logits.target, logits.current).requires_grad());
}

TEST(TrustRegionDivergence, RejectsInvalidInputsWithActionableMessages) {
  const std::string op = "tram::ops::trust_region_divergence:";
  const Tensor logits = torch::randn({4, 6});
  const auto call = [](const Tensor& t, const Tensor& c, const Tensor& mask = {}) {
    return [=] {
      tram::ops::trust_region_divergence(t, c, Divergence::kForward, Reduction::kMean, mask);
    };
  };
  expect_error_mentioning(call(logits, torch::randn({4, 5})),
                          {op, "[4, 6]", "[4, 5]", "same batch"});
  expect_error_mentioning(call(logits, logits, torch::ones({6}, torch::kBool)),
                          {op, "mask has shape [6]", "one mask entry per prediction row"});
  expect_error_mentioning(call(torch::ones({4, 6}, torch::kLong), logits),
                          {op, "target_logits must be floating point", "Long"});
  expect_error_mentioning(call(logits, logits.to(torch::kInt)),
                          {op, "current_logits must be floating point", "Int"});
  expect_error_mentioning(call(torch::randn({4, 0}), torch::randn({4, 0})),
                          {op, "zero classes", "[4, 0]"});
  expect_error_mentioning(call(torch::randn({}), torch::randn({})), {op, "0-dim"});
  expect_error_mentioning(call(Tensor(), logits), {op, "target_logits is undefined"});
}

// ===========================================================================
// Multi-tensor ascent: references and data
// ===========================================================================

// The direction (docs/ALGORITHMS.md §2) of tensor w with gradient g, in fp64.
Tensor expected_direction(Scaling scaling, const Tensor& w, const Tensor& g, double eta) {
  switch (scaling) {
    case Scaling::kIdentity: return g;
    case Scaling::kAdaptive: return (w.abs() + eta).pow(2) * g;
    case Scaling::kFisher: return g / (1 + eta * g * g);
    case Scaling::kReleasedIdentity: return torch::ones_like(w);
    case Scaling::kReleasedAdaptive: return (w.abs() + eta).pow(2);
  }
  return {};
}

// The squared-norm contribution (docs/ALGORITHMS.md §2) of one tensor, in fp64.
double expected_squared_norm_term(Scaling scaling, const Tensor& w, const Tensor& g, double eta) {
  switch (scaling) {
    case Scaling::kIdentity:
    case Scaling::kReleasedIdentity: return (g * g).sum().item<double>();
    case Scaling::kAdaptive:
    case Scaling::kReleasedAdaptive: return ((w.abs() + eta) * g).pow(2).sum().item<double>();
    case Scaling::kFisher: return (g * g / (1 + eta * g * g)).sum().item<double>();
  }
  return kNaN;
}

// A tensor of `shape` that is a strided view when `non_contiguous` (every
// other element of a wider tensor, then transposed if 2-D).
Tensor make_tensor(const std::vector<int64_t>& shape, torch::ScalarType dtype,
                   bool non_contiguous) {
  if (!non_contiguous) return torch::randn(shape, torch::kDouble).to(dtype);
  const bool transpose = shape.size() == 2;
  std::vector<int64_t> wider = transpose ? std::vector<int64_t>{shape[1], shape[0]} : shape;
  wider.back() *= 2;
  const Tensor view = torch::randn(wider, torch::kDouble).to(dtype).slice(-1, 0, wider.back(), 2);
  return transpose ? view.t() : view;
}

// Parameters, gradients and per-tensor options of one ascent test: odd
// sizes, strided views, and different eta and coef for every tensor.
struct AscentCase {
  std::vector<Tensor> params;
  std::vector<Tensor> grads;
  AscentSpec spec;
};

AscentCase make_ascent_case(Scaling scaling, torch::ScalarType dtype) {
  const std::vector<std::pair<std::vector<int64_t>, bool>> layouts = {
      {{1}, false},     {{7}, false},   {{1023}, false},
      {{33, 31}, true}, {{5, 9}, true}, {{4, 3, 2}, false}};
  const std::vector<double> etas = {0.0, 0.01, 0.1, 0.5, 1.0, 0.02};
  const std::vector<double> coefs = {0.3, -0.7, 1.5, 0.05, 2.0, -0.01};
  AscentCase c;
  c.spec.scaling = scaling;
  for (size_t i = 0; i < layouts.size(); ++i) {
    c.params.push_back(make_tensor(layouts[i].first, dtype, layouts[i].second));
    c.grads.push_back(make_tensor(layouts[i].first, dtype, !layouts[i].second));
  }
  c.params[0].zero_();  // a fresh bias: never perturbed by the adaptive ascent with eta = 0
  c.spec.eta = etas;
  c.spec.coef = coefs;
  return c;
}

std::vector<Tensor> clones(const std::vector<Tensor>& tensors) {
  std::vector<Tensor> out;
  for (const auto& t : tensors) out.push_back(t.clone());
  return out;
}

// w + coef * direction(w, g) must be the fp64 value rounded once to the dtype:
// within one ulp of the dtype relative to |w| + |e| (plus fp16's subnormal step).
void expect_ascended(const Tensor& actual, const Tensor& w, const Tensor& g, Scaling scaling,
                     double eta, double coef) {
  SCOPED_TRACE(describe(actual));
  const Tensor w64 = w.to(torch::kDouble);
  const Tensor e = coef * expected_direction(scaling, w64, g.to(torch::kDouble), eta);
  const double ulp = actual.scalar_type() == torch::kDouble  ? 1e-13
                     : actual.scalar_type() == torch::kFloat ? 1e-6
                     : actual.scalar_type() == torch::kHalf  ? 1.0 / 1024
                                                             : 1.0 / 128;
  const double subnormal_step = actual.scalar_type() == torch::kHalf ? 6e-8 : 0.0;
  const Tensor error = (actual.to(torch::kDouble) - (w64 + e)).abs();
  const Tensor bound = ulp * (w64.abs() + e.abs()) + subnormal_step;
  EXPECT_TRUE((error <= bound).all().item<bool>())
      << "largest error " << error.max().item<double>() << " where the bound is "
      << bound.flatten()[error.flatten().argmax()].item<double>();
}

double norm_tolerance(torch::ScalarType dtype) { return dtype == torch::kDouble ? 1e-12 : 1e-5; }

// ===========================================================================
// Multi-tensor ascent
// ===========================================================================

TEST(MultiTensorAscent, SquaredNormMatchesPerTensorFormula) {
  torch::manual_seed(20);
  for (const auto dtype : kFloatingDtypes) {
    for (const auto scaling : kScalings) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + tram::ops::to_string(scaling));
      const AscentCase c = make_ascent_case(scaling, dtype);
      const Tensor norm = tram::ops::squared_norm(c.params, c.grads, c.spec);
      EXPECT_EQ(norm.dim(), 0);
      EXPECT_EQ(norm.scalar_type(), dtype == torch::kDouble ? torch::kDouble : torch::kFloat);
      double expected = 0.0;
      for (size_t i = 0; i < c.params.size(); ++i) {
        expected += expected_squared_norm_term(scaling, c.params[i].to(torch::kDouble),
                                               c.grads[i].to(torch::kDouble), c.spec.eta[i]);
      }
      // fp16/bf16 values are squared and summed in fp32, so the fp32
      // tolerance applies (fp16 arithmetic would miss it by ~1e-3).
      EXPECT_NEAR(norm.item<double>(), expected, norm_tolerance(dtype) * expected);
    }
  }
}

TEST(MultiTensorAscent, SquaredNormOfMixedDtypesAccumulatesInFloat64) {
  torch::manual_seed(21);
  const std::vector<Tensor> params = {torch::randn({5}), torch::randn({3, 3}, torch::kDouble),
                                      torch::randn({7}).to(torch::kHalf), torch::randn({2}),
                                      torch::randn({4}).to(torch::kBFloat16)};
  std::vector<Tensor> grads;
  for (const auto& p : params)
    grads.push_back(torch::randn(p.sizes(), torch::kDouble).to(p.scalar_type()));
  AscentSpec spec;
  spec.scaling = Scaling::kAdaptive;
  spec.eta = {0.1, 0.2, 0.3, 0.4, 0.5};
  const Tensor norm = tram::ops::squared_norm(params, grads, spec);
  EXPECT_EQ(norm.scalar_type(), torch::kDouble);
  double expected = 0.0;
  for (size_t i = 0; i < params.size(); ++i) {
    expected += expected_squared_norm_term(spec.scaling, params[i].to(torch::kDouble),
                                           grads[i].to(torch::kDouble), spec.eta[i]);
  }
  EXPECT_NEAR(norm.item<double>(), expected, 1e-6 * expected);
}

TEST(MultiTensorAscent, SquaredNormIgnoresCoefAndAcceptsNoEtaForIdentity) {
  const std::vector<Tensor> g = {torch::full({3}, 2.0), torch::full({2, 2}, -1.0)};
  AscentSpec spec;  // kIdentity, no eta, no coef
  EXPECT_EQ(tram::ops::squared_norm(g, g, spec).item<float>(), 16.0f);
}

TEST(MultiTensorAscent, AscendWithBackupMatchesFormulaAndBacksUpExactly) {
  torch::manual_seed(22);
  for (const auto dtype : kFloatingDtypes) {
    for (const auto scaling : kScalings) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + tram::ops::to_string(scaling));
      const AscentCase c = make_ascent_case(scaling, dtype);
      const std::vector<Tensor> original = clones(c.params);
      const std::vector<Tensor> grads_before = clones(c.grads);
      std::vector<Tensor> backups;
      for (const auto& p : c.params) backups.push_back(torch::full_like(p, kNaN));
      backups[3] = make_tensor({33, 31}, dtype, true).fill_(kNaN);  // strided backup too
      tram::ops::ascend_with_backup(c.params, c.grads, backups, c.spec);
      for (size_t i = 0; i < c.params.size(); ++i) {
        SCOPED_TRACE("tensor " + std::to_string(i));
        EXPECT_TRUE(same_bits(backups[i], original[i]));
        EXPECT_TRUE(same_bits(c.grads[i], grads_before[i]));
        expect_ascended(c.params[i], original[i], c.grads[i], scaling, c.spec.eta[i],
                        c.spec.coef[i]);
      }
    }
  }
}

TEST(MultiTensorAscent, AscendFromMatchesFormulaAndLeavesSourcesUntouched) {
  torch::manual_seed(23);
  for (const auto dtype : kFloatingDtypes) {
    for (const auto scaling : kScalings) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + tram::ops::to_string(scaling));
      const AscentCase c = make_ascent_case(scaling, dtype);
      const std::vector<Tensor> sources = clones(c.params);
      std::vector<Tensor> params;
      for (const auto& s : sources) params.push_back(torch::full_like(s, kNaN));
      tram::ops::ascend_from(params, sources, c.grads, c.spec);
      for (size_t i = 0; i < params.size(); ++i) {
        SCOPED_TRACE("tensor " + std::to_string(i));
        EXPECT_TRUE(same_bits(sources[i], c.params[i]));
        expect_ascended(params[i], sources[i], c.grads[i], scaling, c.spec.eta[i], c.spec.coef[i]);
      }
      // In place (params are their own source) gives the same values.
      std::vector<Tensor> in_place = clones(sources);
      tram::ops::ascend_from(in_place, in_place, c.grads, c.spec);
      for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(same_bits(in_place[i], params[i]));
    }
  }
}

TEST(MultiTensorAscent, ReleasedScalingsDoNotFollowTheGradient) {
  // The released TRAM code: e = coef (identity) or coef * T^2 (adaptive),
  // whatever the gradient, so a zero gradient still moves the parameters.
  const std::vector<Tensor> w = {torch::tensor({-2.0, 0.0, 3.0}, torch::kDouble)};
  const std::vector<Tensor> zero_grad = {torch::zeros({3}, torch::kDouble)};
  AscentSpec spec;
  spec.eta = {0.5};
  spec.coef = {0.25};
  std::vector<Tensor> out = {torch::empty({3}, torch::kDouble)};
  spec.scaling = Scaling::kReleasedIdentity;
  tram::ops::ascend_from(out, w, zero_grad, spec);
  EXPECT_TRUE(torch::equal(out[0], torch::tensor({-1.75, 0.25, 3.25}, torch::kDouble))) << out[0];
  spec.scaling = Scaling::kReleasedAdaptive;
  tram::ops::ascend_from(out, w, zero_grad, spec);
  // T = |w| + 0.5 = {2.5, 0.5, 3.5}; e = 0.25 T^2.
  EXPECT_TRUE(
      torch::allclose(out[0], torch::tensor({-2.0 + 1.5625, 0.0625, 3.0 + 3.0625}, torch::kDouble)))
      << out[0];
  for (const auto scaling : {Scaling::kIdentity, Scaling::kAdaptive, Scaling::kFisher}) {
    spec.scaling = scaling;
    tram::ops::ascend_from(out, w, zero_grad, spec);
    EXPECT_TRUE(torch::equal(out[0], w[0])) << tram::ops::to_string(scaling);
  }
}

TEST(MultiTensorAscent, WorksOnLeavesThatRequireGrad) {
  torch::manual_seed(24);
  std::vector<Tensor> params = {torch::randn({4}).requires_grad_(),
                                torch::randn({2, 3}).requires_grad_()};
  const std::vector<Tensor> original = {params[0].detach().clone(), params[1].detach().clone()};
  const std::vector<Tensor> grads = {torch::randn({4}), torch::randn({2, 3})};
  std::vector<Tensor> backups = {torch::empty({4}), torch::empty({2, 3})};
  AscentSpec spec;
  spec.scaling = Scaling::kAdaptive;
  spec.eta = {0.01, 0.01};
  spec.coef = {0.1, 0.2};
  ASSERT_NO_THROW(tram::ops::squared_norm(params, grads, spec));
  EXPECT_FALSE(tram::ops::squared_norm(params, grads, spec).requires_grad());
  ASSERT_NO_THROW(tram::ops::ascend_with_backup(params, grads, backups, spec));
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(params[i].requires_grad());
    EXPECT_FALSE(backups[i].requires_grad());
    EXPECT_TRUE(same_bits(backups[i], original[i]));
    expect_ascended(params[i].detach(), original[i], grads[i], spec.scaling, spec.eta[i],
                    spec.coef[i]);
  }
  ASSERT_NO_THROW(tram::ops::copy(params, backups));
  ASSERT_NO_THROW(tram::ops::swap(params, backups));
  EXPECT_TRUE(same_bits(params[1].detach(), original[1]));
}

TEST(MultiTensorAscent, EmptyListsAreValid) {
  AscentSpec spec;
  spec.scaling = Scaling::kAdaptive;  // eta and coef empty: zero tensors need zero values
  const Tensor norm = tram::ops::squared_norm({}, {}, spec);
  EXPECT_EQ(norm.dim(), 0);
  EXPECT_EQ(norm.scalar_type(), torch::kFloat);
  EXPECT_EQ(norm.item<float>(), 0.0f);
  EXPECT_NO_THROW(tram::ops::ascend_with_backup({}, {}, {}, spec));
  EXPECT_NO_THROW(tram::ops::ascend_from({}, {}, {}, spec));
  EXPECT_NO_THROW(tram::ops::copy({}, {}));
  EXPECT_NO_THROW(tram::ops::swap({}, {}));
}

TEST(MultiTensorAscent, RejectsMismatchedListsWithActionableMessages) {
  const std::vector<Tensor> two = {torch::randn({3}), torch::randn({2, 2})};
  const std::vector<Tensor> one = {torch::randn({3})};
  const std::vector<Tensor> reshaped = {torch::randn({3}), torch::randn({4})};
  const std::vector<Tensor> as_double = {torch::randn({3}, torch::kDouble),
                                         torch::randn({2, 2}, torch::kDouble)};
  AscentSpec spec;
  spec.scaling = Scaling::kAdaptive;
  spec.eta = {0.01, 0.01};
  spec.coef = {0.1, 0.1};
  expect_error_mentioning([&] { tram::ops::squared_norm(two, one, spec); },
                          {"tram::ops::squared_norm", "params has 2 tensors but grads has 1"});
  expect_error_mentioning([&] { tram::ops::squared_norm(two, reshaped, spec); },
                          {"tram::ops::squared_norm", "grads[1] has shape [4]", "[2, 2]"});
  expect_error_mentioning([&] { tram::ops::squared_norm(two, as_double, spec); },
                          {"tram::ops::squared_norm", "same dtype"});
  AscentSpec short_eta = spec;
  short_eta.eta = {0.01};
  expect_error_mentioning(
      [&] { tram::ops::squared_norm(two, two, short_eta); },
      {"tram::ops::squared_norm", "spec.eta has 1 values but there are 2 tensors"});
  AscentSpec no_coef = spec;
  no_coef.coef.clear();
  expect_error_mentioning(
      [&] { tram::ops::ascend_with_backup(clones(two), two, clones(two), no_coef); },
      {"tram::ops::ascend_with_backup", "spec.coef has 0 values"});
  expect_error_mentioning([&] { tram::ops::ascend_with_backup(clones(two), two, one, spec); },
                          {"tram::ops::ascend_with_backup", "backups has 1"});
  expect_error_mentioning([&] { tram::ops::ascend_from(clones(two), reshaped, two, spec); },
                          {"tram::ops::ascend_from", "sources[1]"});
  expect_error_mentioning([&] { tram::ops::copy(clones(two), as_double); },
                          {"tram::ops::copy", "dst[0] is Float but src[0] is Double"});
  expect_error_mentioning([&] { tram::ops::swap(clones(two), one); },
                          {"tram::ops::swap", "a has 2 tensors but b has 1"});
  expect_error_mentioning(
      [&] {
        tram::ops::copy({torch::zeros({3}, torch::kLong)}, {torch::zeros({3}, torch::kLong)});
      },
      {"tram::ops::copy", "dst[0] must be floating point", "Long"});
  expect_error_mentioning([&] { tram::ops::squared_norm({Tensor()}, {torch::zeros({1})}, spec); },
                          {"tram::ops::squared_norm", "params[0] is undefined"});
}

// ===========================================================================
// Copy and swap
// ===========================================================================

// Values a bit-exact copy must keep: signed zeros, infinities, a NaN with a
// payload, a subnormal, and a value that is not a short decimal.
Tensor special_values(torch::ScalarType dtype) {
  Tensor values =
      torch::tensor({0.0, -0.0, kInf, -kInf, kNaN, 1e-40, 1.0 / 3.0, -7.25}, torch::kDouble)
          .to(dtype);
  if (dtype == torch::kFloat)
    values[4] = torch::tensor({0x7fc00123}, torch::kInt32).view(torch::kFloat)[0];
  return values;
}

TEST(TensorListCopyAndSwap, CopyIsBitExact) {
  torch::manual_seed(30);
  std::vector<Tensor> src, dst;
  for (const auto dtype : kFloatingDtypes) {
    src.push_back(special_values(dtype));
    dst.push_back(torch::zeros({8}, dtype));
    // Strided source and destination.
    src.push_back(make_tensor({33, 31}, dtype, true));
    dst.push_back(make_tensor({33, 31}, dtype, true));
    src.push_back(make_tensor({1023}, dtype, false));
    dst.push_back(make_tensor({1023}, dtype, false));
  }
  tram::ops::copy(dst, src);
  for (size_t i = 0; i < src.size(); ++i) {
    SCOPED_TRACE(describe(src[i]));
    EXPECT_TRUE(same_bits(dst[i], src[i]));
  }
}

TEST(TensorListCopyAndSwap, SwapExchangesContentsExactly) {
  torch::manual_seed(31);
  std::vector<Tensor> a, b;
  for (const auto dtype : kFloatingDtypes) {
    a.push_back(special_values(dtype));
    b.push_back(torch::randn({8}, torch::kDouble).to(dtype));
    a.push_back(make_tensor({33, 31}, dtype, true));
    b.push_back(make_tensor({33, 31}, dtype, false));
    a.push_back(make_tensor({1}, dtype, false));
    b.push_back(make_tensor({1}, dtype, false));
  }
  const std::vector<Tensor> a_before = clones(a), b_before = clones(b);
  tram::ops::swap(a, b);
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(describe(a[i]));
    EXPECT_TRUE(same_bits(a[i], b_before[i]));
    EXPECT_TRUE(same_bits(b[i], a_before[i]));
    EXPECT_EQ(a[i].is_contiguous(), a_before[i].is_contiguous()) << "swap must not rebind storage";
  }
  tram::ops::swap(a, b);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(same_bits(a[i], a_before[i]));
}

}  // namespace
