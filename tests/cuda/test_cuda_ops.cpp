// CUDA kernels of tram::ops against the ATen reference run on CPU copies of
// the same inputs. Every test skips without a CUDA device.
//
// With TRAM_WITH_CUDA the tests also ask the dispatch predicates of
// src/ops_cuda.h whether the kernels took the inputs, so that a silent
// fall-back to the reference cannot pass for a tested kernel. Without it,
// CUDA tensors run the reference, and these tests check that instead.
#include <tram/tram.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#ifdef TRAM_WITH_CUDA
#include "../../src/cuda/kernels.h"
#include "../../src/ops_cuda.h"
#include "../allocation_counter.h"
#endif

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

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const std::vector<Divergence> kDivergences = {Divergence::kForward, Divergence::kReverse,
                                              Divergence::kSymmetric};
const std::vector<Reduction> kReductions = {Reduction::kNone, Reduction::kMean, Reduction::kSum,
                                            Reduction::kLegacy};
const std::vector<Scaling> kScalings = {Scaling::kIdentity, Scaling::kAdaptive, Scaling::kFisher,
                                        Scaling::kReleasedIdentity, Scaling::kReleasedAdaptive};
const std::vector<torch::ScalarType> kLogitDtypes = {torch::kFloat, torch::kHalf,
                                                     torch::kBFloat16};
const std::vector<torch::ScalarType> kParamDtypes = {torch::kFloat, torch::kHalf,
                                                     torch::kBFloat16, torch::kDouble};

#ifdef TRAM_WITH_CUDA
// Elements per chunk of the multi-tensor kernels: sizes around it cross chunk boundaries.
constexpr int64_t kChunk = tram::cuda::kChunkElements;
#else
constexpr int64_t kChunk = 8192;
#endif

const torch::Device kCuda(torch::kCUDA, 0);

std::string describe(const Tensor& t) {
  std::ostringstream out;
  out << t.scalar_type() << t.sizes() << (t.is_contiguous() ? "" : " non-contiguous");
  return out.str();
}


// One unit in the last place of a dtype, relative.
double ulp(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kDouble: return 2.3e-16;
    case torch::kFloat: return 1.2e-7;
    case torch::kHalf: return 9.8e-4;
    case torch::kBFloat16: return 7.9e-3;
    default: return 0.0;
  }
}

// |actual - expected| <= atol + rtol |expected| element-wise after widening
// to fp64 (actual may live on the GPU); NaN must match NaN, inf must match.
void expect_close(const Tensor& actual, const Tensor& expected, double rtol, double atol) {
  ASSERT_EQ(actual.sizes(), expected.sizes());
  const Tensor a = actual.detach().cpu().to(torch::kDouble);
  const Tensor e = expected.detach().cpu().to(torch::kDouble);
  const Tensor close = torch::isclose(a, e, rtol, atol, /*equal_nan=*/true);
  if (!close.all().item<bool>()) {
    const Tensor error = torch::where(close, torch::zeros_like(a), (a - e).abs());
    const int64_t worst = error.nan_to_num(kInf).flatten().argmax().item<int64_t>();
    ADD_FAILURE() << "not close (rtol " << rtol << ", atol " << atol
                  << "): " << (~close).sum().item<int64_t>() << " of " << a.numel()
                  << " elements differ; worst at flat index " << worst << ": actual "
                  << a.flatten()[worst].item<double>() << ", expected "
                  << e.flatten()[worst].item<double>();
  }
}

// Tolerances relative to the largest finite |expected| as well, so that
// values that are small for their tensor are not held to a relative bound.
void expect_close_to_scale(const Tensor& actual, const Tensor& expected, double rtol) {
  const Tensor e = expected.detach().cpu().to(torch::kDouble);
  const Tensor finite = e.masked_select(torch::isfinite(e));
  const double scale = finite.numel() > 0 ? finite.abs().max().item<double>() : 0.0;
  expect_close(actual, expected, rtol, rtol * scale);
}

// Same bit patterns (NaN payloads, signed zeros), whatever the devices.
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  const auto as_integers = [](const Tensor& t) {
    const Tensor dense = t.detach().cpu().contiguous();
    switch (t.element_size()) {
      case 2: return dense.view(torch::kInt16);
      case 4: return dense.view(torch::kInt32);
      default: return dense.view(torch::kInt64);
    }
  };
  return torch::equal(as_integers(a), as_integers(b));
}

std::vector<Tensor> cpu_copies(const std::vector<Tensor>& tensors) {
  std::vector<Tensor> out;
  for (const Tensor& t : tensors) out.push_back(t.detach().cpu().clone());
  return out;
}

// ===========================================================================
// Trust-region divergence
// ===========================================================================

// Target and current logits differing by O(1) noise (per-row KL of O(1)),
// created in fp64 and rounded once to `dtype`.
struct Logits {
  Tensor target;
  Tensor current;
};

Logits random_logits(torch::IntArrayRef shape, torch::ScalarType dtype, double noise = 1.0) {
  const Tensor target = 2.0 * torch::randn(shape, torch::kDouble);
  const Tensor current = target + noise * torch::randn(shape, torch::kDouble);
  return {target.to(dtype), current.to(dtype)};
}

// About a third of the rows masked, with NaN and inf in the masked rows of
// both tensors (the kernels must not read them).
Tensor poison_masked_rows(Logits& logits) {
  const auto shape = logits.target.sizes();
  const Tensor mask = torch::rand(shape.slice(0, shape.size() - 1)) > 0.33;
  const Tensor masked = (~mask).unsqueeze(-1).expand(shape);
  logits.target = logits.target.masked_fill(masked, kNaN);
  logits.current = logits.current.masked_fill(masked, kInf);
  return mask;
}

bool kernels_take(const Tensor& target, const Tensor& current) {
#ifdef TRAM_WITH_CUDA
  const int64_t classes = target.size(-1);
  return tram::ops::cuda_impl::divergence_supported(target.reshape({-1, classes}),
                                                    current.reshape({-1, classes}), Tensor());
#else
  (void)target;
  (void)current;
  return true;
#endif
}

// The divergence and the gradients of both logit tensors, on the GPU and
// with the reference on the CPU, compared. `gpu` and `cpu` hold the same
// values, each in its own layout (the GPU tensors may be views). The
// gradients come from a random `upstream` (per row for kNone) so that every
// row's weight matters.
void expect_divergence_matches_cpu(const Logits& gpu, const Logits& cpu, const Tensor& mask,
                                   Divergence divergence, Reduction reduction, double value_rtol,
                                   double grad_rtol, bool check_grads = true) {
  SCOPED_TRACE(describe(gpu.target) + " / " + describe(gpu.current) + " " + tram::ops::to_string(divergence) +
               " " + tram::ops::to_string(reduction) + (mask.defined() ? " masked" : ""));
  ASSERT_TRUE(gpu.target.is_cuda() && gpu.current.is_cuda());
  // detach() keeps the strides: the leaves are the views themselves.
  const Tensor target_gpu = gpu.target.detach().requires_grad_(check_grads);
  const Tensor current_gpu = gpu.current.detach().requires_grad_(check_grads);
  const Tensor target_cpu = cpu.target.detach().requires_grad_(check_grads);
  const Tensor current_cpu = cpu.current.detach().requires_grad_(check_grads);
  const Tensor mask_gpu = mask.defined() ? mask.to(kCuda) : Tensor();
  const Tensor mask_cpu = mask.defined() ? mask.cpu() : Tensor();

  const Tensor on_gpu =
      tram::ops::trust_region_divergence(target_gpu, current_gpu, divergence, reduction, mask_gpu);
  const Tensor on_cpu =
      tram::ops::trust_region_divergence(target_cpu, current_cpu, divergence, reduction, mask_cpu);
  ASSERT_TRUE(on_gpu.is_cuda());
  EXPECT_EQ(on_gpu.scalar_type(), on_cpu.scalar_type());
  expect_close_to_scale(on_gpu, on_cpu, value_rtol);
  if (!check_grads) return;

  const Tensor upstream = torch::rand(on_cpu.sizes(), torch::kDouble) + 0.5;
  (on_gpu * upstream.to(on_gpu.options())).sum().backward();
  (on_cpu * upstream.to(on_cpu.options())).sum().backward();
  ASSERT_TRUE(target_gpu.grad().defined());
  ASSERT_TRUE(current_gpu.grad().defined());
  EXPECT_EQ(target_gpu.grad().scalar_type(), target_gpu.scalar_type());
  EXPECT_EQ(current_gpu.grad().scalar_type(), current_gpu.scalar_type());
  {
    SCOPED_TRACE("gradient of the target logits");
    expect_close_to_scale(target_gpu.grad(), target_cpu.grad(), grad_rtol);
  }
  {
    SCOPED_TRACE("gradient of the current logits");
    expect_close_to_scale(current_gpu.grad(), current_cpu.grad(), grad_rtol);
  }
}

// The same for contiguous CPU logits, copied to the GPU.
void expect_divergence_matches_cpu(const Tensor& target, const Tensor& current, const Tensor& mask,
                                   Divergence divergence, Reduction reduction, double value_rtol,
                                   double grad_rtol, bool check_grads = true) {
  expect_divergence_matches_cpu(Logits{target.to(kCuda), current.to(kCuda)},
                                Logits{target.cpu(), current.cpu()}, mask, divergence, reduction,
                                value_rtol, grad_rtol, check_grads);
}

// fp32 math on both sides, different summation orders: the values agree to
// fp32 rounding; gradients stored in fp16/bf16 may differ by one ulp.
double value_rtol() { return 2e-5; }
double grad_rtol(torch::ScalarType dtype) {
  return dtype == torch::kFloat ? 2e-5 : 1.01 * ulp(dtype);
}

TEST(CudaDivergence, MatchesCpuReferenceForEveryDtypeShapeDirectionAndReduction) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(101);
  // Rows of 3 (NLI) to 50257 (GPT-2), around the warp/block switch (1024)
  // and the vector widths, 1-D and 3-D logits.
  const std::vector<std::vector<int64_t>> shapes = {
      {32, 3}, {1, 1}, {9}, {5, 7}, {3, 33}, {17, 1024}, {3, 1025}, {4, 2049}, {2, 3, 50257}};
  for (const auto dtype : kLogitDtypes) {
    for (const auto& shape : shapes) {
      Logits logits = random_logits(shape, dtype);
      EXPECT_TRUE(kernels_take(logits.target.to(kCuda), logits.current.to(kCuda)));
      for (const auto divergence : kDivergences) {
        for (const auto reduction : kReductions) {
          expect_divergence_matches_cpu(logits.target, logits.current, Tensor(), divergence,
                                        reduction, value_rtol(), grad_rtol(dtype));
        }
      }
    }
  }
}

TEST(CudaDivergence, MaskedRowsAreSkippedEvenWhenTheyHoldNaNAndInf) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(102);
  for (const auto dtype : kLogitDtypes) {
    for (const std::vector<int64_t>& shape :
         {std::vector<int64_t>{32, 3}, {4, 16, 33}, {6, 2000}, {2, 5, 50257}}) {
      Logits logits = random_logits(shape, dtype);
      const Tensor mask = poison_masked_rows(logits);
      for (const auto divergence : kDivergences) {
        for (const auto reduction : {Reduction::kNone, Reduction::kMean}) {
          expect_divergence_matches_cpu(logits.target, logits.current, mask, divergence,
                                        reduction, value_rtol(), grad_rtol(dtype));
        }
      }
      // A float mask (nonzero = valid) means the same.
      expect_divergence_matches_cpu(logits.target, logits.current, mask.to(torch::kFloat),
                                    Divergence::kForward, Reduction::kMean, value_rtol(),
                                    grad_rtol(dtype));
    }
  }
}

TEST(CudaDivergence, EmptyAndFullyMaskedBatchesGiveZero) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const Logits empty = random_logits({0, 5}, torch::kFloat);
  for (const auto reduction : kReductions) {
    expect_divergence_matches_cpu(empty.target, empty.current, Tensor(), Divergence::kSymmetric,
                                  reduction, value_rtol(), value_rtol());
  }
  Logits logits = random_logits({4, 3000}, torch::kBFloat16);
  const Tensor none_valid = torch::zeros({4}, torch::kBool);
  const Tensor d = tram::ops::trust_region_divergence(logits.target.to(kCuda),
                                                     logits.current.to(kCuda), Divergence::kForward,
                                                     Reduction::kMean, none_valid.to(kCuda));
  EXPECT_EQ(d.item<float>(), 0.0f);
}

TEST(CudaDivergence, NearlyIdenticalDistributionsOverGpt2Vocabulary) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // Consecutive steps change the predictions little, so d is a small
  // difference of large log-probabilities: the case fp32 rounding hurts.
  torch::manual_seed(103);
  const Logits logits = random_logits({8, 50257}, torch::kFloat, /*noise=*/1e-3);
  const Tensor on_gpu = tram::ops::trust_region_divergence(
      logits.target.to(kCuda), logits.current.to(kCuda), Divergence::kForward, Reduction::kNone);
  const Tensor exact = tram::ops::trust_region_divergence(
      logits.target.to(torch::kDouble), logits.current.to(torch::kDouble), Divergence::kForward,
      Reduction::kNone);
  const Tensor fp32_reference = tram::ops::trust_region_divergence(
      logits.target, logits.current, Divergence::kForward, Reduction::kNone);
  // KL is about 5e-7 per row here; fp32 log-sums over 50257 classes carry
  // errors near 1e-6 in the reference as in the kernel: the kernel must be
  // no worse than the reference (with slack for a different summation order).
  const double kernel_error = (on_gpu.cpu().to(torch::kDouble) - exact).abs().max().item<double>();
  const double reference_error = (fp32_reference.to(torch::kDouble) - exact).abs().max().item<double>();
  EXPECT_LE(kernel_error, std::max(2.0 * reference_error, 2e-6))
      << "kernel " << kernel_error << ", fp32 reference " << reference_error;
}

TEST(CudaDivergence, LargeLogitsAndNegativeInfinityMatchReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(104);
  // Logits of magnitude 1e4 (fp32: one ulp of the log-sum-exp is 1e-3), and
  // sharp distributions (logits spread over +-1e3).
  const Logits large = random_logits({6, 4099}, torch::kFloat);
  for (const auto divergence : kDivergences) {
    expect_divergence_matches_cpu(large.target + 1e4, large.current + 1e4, Tensor(), divergence,
                                  Reduction::kNone, 1e-4, 1e-4);
    expect_divergence_matches_cpu(large.target * 300, large.current * 300, Tensor(), divergence,
                                  Reduction::kNone, 1e-4, 1e-4);
  }
  // Classes ruled out by both (-inf in both), by the target only (forward KL
  // finite, reverse +inf), by the current only, including the first class
  // of a row (the unaligned head) and a whole stretch of a long row.
  for (const int64_t classes : {int64_t{7}, int64_t{3001}}) {
    Logits logits = random_logits({5, classes}, torch::kFloat);
    logits.target.index_put_({torch::indexing::Slice(), 0}, -kInf);
    logits.current.index_put_({torch::indexing::Slice(), 0}, -kInf);
    logits.target.index_put_({torch::indexing::Slice(), torch::indexing::Slice(1, 3)}, -kInf);
    logits.current.index_put_({torch::indexing::Slice(), classes - 1}, -kInf);
    for (const auto divergence : kDivergences) {
      // Infinite divergences have NaN gradients in both implementations.
      expect_divergence_matches_cpu(logits.target, logits.current, Tensor(), divergence,
                                    Reduction::kNone, value_rtol(), value_rtol(),
                                    /*check_grads=*/false);
    }
    logits.current.index_put_({torch::indexing::Slice(), classes - 1}, 0.0);
    expect_divergence_matches_cpu(logits.target, logits.current, Tensor(), Divergence::kForward,
                                  Reduction::kMean, value_rtol(), 1e-4);
  }
  // A NaN in a valid row makes that row NaN, as log_softmax does.
  Logits with_nan = random_logits({3, 2000}, torch::kFloat);
  with_nan.current.index_put_({1, 777}, kNaN);
  const Tensor rows = tram::ops::trust_region_divergence(
      with_nan.target.to(kCuda), with_nan.current.to(kCuda), Divergence::kForward, Reduction::kNone);
  EXPECT_TRUE(std::isnan(rows[1].item<float>()));
  EXPECT_TRUE(std::isfinite(rows[0].item<float>()));
  EXPECT_TRUE(std::isfinite(rows[2].item<float>()));
}

TEST(CudaDivergence, NonContiguousAndMixedDtypeLogits) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(105);
  const int64_t rows = 12;
  using View = std::function<Tensor(const Tensor&)>;
  for (const int64_t classes : {int64_t{3}, int64_t{1500}}) {
    SCOPED_TRACE(std::to_string(classes) + " classes");
    // Each view is taken of a base tensor on each device, so that the GPU
    // side really is strided.
    const std::vector<std::pair<std::vector<int64_t>, View>> views = {
        // Strided rows, read in place (rows start at every alignment).
        {{rows, classes + 5}, [=](const Tensor& t) { return t.slice(1, 0, classes); }},
        // Strided classes and transposed logits, made contiguous first.
        {{rows, 2 * classes}, [=](const Tensor& t) { return t.slice(1, 0, 2 * classes, 2); }},
        {{classes, rows}, [](const Tensor& t) { return t.t(); }},
        // A causal LM's shifted logits: [B, T-1, V] of [B, T, V].
        {{3, rows / 3 + 1, classes}, [](const Tensor& t) { return t.slice(1, 0, -1); }},
        // One row broadcast over the batch (row stride 0).
        {{1, classes}, [](const Tensor& t) { return t.expand({rows, t.size(1)}); }},
    };
    for (const auto dtype : kLogitDtypes) {
      for (const auto& [base_shape, view] : views) {
        const Logits base = random_logits(base_shape, dtype);
        const Logits gpu{view(base.target.to(kCuda)), view(base.current.to(kCuda))};
        const Logits cpu{view(base.target), view(base.current)};
        for (const auto divergence : kDivergences) {
          expect_divergence_matches_cpu(gpu, cpu, Tensor(), divergence, Reduction::kMean,
                                        value_rtol(), grad_rtol(dtype));
        }
      }
    }
    // Different dtypes: widened to the common type (fp16 + bf16 -> fp32).
    const Logits a = random_logits({rows, classes}, torch::kFloat);
    for (const auto& [t, c] : std::vector<std::pair<torch::ScalarType, torch::ScalarType>>{
             {torch::kFloat, torch::kBFloat16},
             {torch::kHalf, torch::kBFloat16},
             {torch::kBFloat16, torch::kFloat}}) {
      expect_divergence_matches_cpu(a.target.to(t), a.current.to(c), Tensor(),
                                    Divergence::kSymmetric, Reduction::kMean, value_rtol(),
                                    grad_rtol(torch::kBFloat16));
    }
  }
}

TEST(CudaDivergence, OnlyInputsThatRequireGradReceiveOne) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(106);
  // TRPO / MESA: the target comes from a no-grad pass.
  const Logits logits = random_logits({16, 5000}, torch::kBFloat16);
  const Tensor target = logits.target.to(kCuda);
  const Tensor current = logits.current.to(kCuda).detach().requires_grad_();
  tram::ops::trust_region_divergence(target, current).backward();
  EXPECT_FALSE(target.grad().defined());
  ASSERT_TRUE(current.grad().defined());
  const Tensor current_cpu = logits.current.detach().clone().requires_grad_();
  tram::ops::trust_region_divergence(logits.target, current_cpu).backward();
  expect_close_to_scale(current.grad(), current_cpu.grad(), grad_rtol(torch::kBFloat16));
}

TEST(CudaDivergence, Float64LogitsTakeTheReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(107);
  const Logits logits = random_logits({4, 100}, torch::kDouble);
#ifdef TRAM_WITH_CUDA
  EXPECT_FALSE(kernels_take(logits.target.to(kCuda), logits.current.to(kCuda)));
#endif
  expect_divergence_matches_cpu(logits.target, logits.current, Tensor(), Divergence::kSymmetric,
                                Reduction::kMean, 1e-12, 1e-12);
}

// ===========================================================================
// Multi-tensor ascent
// ===========================================================================

// How a test tensor is laid out in memory. The multi-tensor kernels take
// dense tensors; strided views take the reference.
enum class Placement {
  kContiguous,
  kMisaligned,    // contiguous, but starting one element into its storage (no 16-byte loads)
  kChannelsLast,  // dense, not contiguous (4-D)
  kStrided,       // every other element: not dense
};

// `values` (CPU) placed on `device` with `placement`.
Tensor place(const Tensor& values, const torch::Device& device, Placement placement) {
  switch (placement) {
    case Placement::kContiguous: return values.to(device).contiguous();
    case Placement::kMisaligned: {
      Tensor storage = torch::empty({values.numel() + 1}, values.options().device(device));
      Tensor view = storage.slice(0, 1).view(values.sizes());
      view.copy_(values);
      return view;
    }
    case Placement::kChannelsLast:
      return values.to(device).contiguous(torch::MemoryFormat::ChannelsLast);
    case Placement::kStrided: {
      std::vector<int64_t> wider = values.sizes().vec();
      wider.back() *= 2;
      Tensor view = torch::empty(wider, values.options().device(device))
                        .slice(-1, 0, wider.back(), 2);
      view.copy_(values);
      return view;
    }
  }
  return {};
}

struct TensorSpec {
  std::vector<int64_t> shape;
  Placement placement = Placement::kContiguous;
};

// Sizes around the chunk and vector boundaries, a 0-dim tensor, empty
// tensors, misaligned and channels-last ones.
std::vector<TensorSpec> odd_tensor_specs() {
  return {{{1}},
          {{}},
          {{7}},
          {{0}},
          {{8}},
          {{9}, Placement::kMisaligned},
          {{33, 31}},
          {{kChunk - 1}},
          {{kChunk}},
          {{kChunk + 1}, Placement::kMisaligned},
          {{2, 0, 3}},
          {{3 * kChunk + 5}},
          {{4, 6, 5, 3}, Placement::kChannelsLast},
          {{100003}}};
}

// 2000 small tensors, as a model with many LayerNorms and biases has.
std::vector<TensorSpec> many_small_tensor_specs() {
  std::vector<TensorSpec> specs;
  for (int i = 0; i < 2000; ++i) specs.push_back({{1 + (i * 37) % 300}});
  return specs;
}

// Parameters and gradients of one test on CPU and on the GPU (same values,
// each in its placement), with per-tensor eta and coef.
struct Lists {
  std::vector<Tensor> cpu_params, cpu_grads, gpu_params, gpu_grads;
  AscentSpec spec;
};

Lists make_lists(const std::vector<TensorSpec>& specs, torch::ScalarType dtype, Scaling scaling,
                 bool grad_placement_follows_param = true) {
  Lists lists;
  lists.spec.scaling = scaling;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Tensor w = torch::randn(specs[i].shape, torch::kDouble).to(dtype);
    const Tensor g = torch::randn(specs[i].shape, torch::kDouble).to(dtype);
    lists.cpu_params.push_back(w.clone());
    lists.cpu_grads.push_back(g.clone());
    lists.gpu_params.push_back(place(w, kCuda, specs[i].placement));
    lists.gpu_grads.push_back(
        place(g, kCuda, grad_placement_follows_param ? specs[i].placement : Placement::kContiguous));
    lists.spec.eta.push_back(0.01 * static_cast<double>(i % 7));
    lists.spec.coef.push_back((i % 2 == 0 ? 0.05 : -0.3) * (1.0 + static_cast<double>(i % 5)));
  }
  return lists;
}

bool kernels_take(std::initializer_list<torch::TensorList> lists) {
#ifdef TRAM_WITH_CUDA
  return tram::ops::cuda_impl::multi_tensor_supported(lists);
#else
  (void)lists;
  return true;
#endif
}

// Each output rounded once from the same fp32 (fp64) operations as the
// reference: equal up to a rounding difference of the last operation.
void expect_params_close(const std::vector<Tensor>& gpu, const std::vector<Tensor>& cpu) {
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t i = 0; i < gpu.size(); ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i) + " " + describe(gpu[i]));
    const auto dtype = gpu[i].scalar_type();
    const double subnormal_step = dtype == torch::kHalf ? 6e-8 : 1e-30;
    expect_close(gpu[i], cpu[i], 1.01 * ulp(dtype), subnormal_step);
  }
}

void expect_same_bits(const std::vector<Tensor>& gpu, const std::vector<Tensor>& cpu) {
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t i = 0; i < gpu.size(); ++i) {
    EXPECT_TRUE(same_bits(gpu[i], cpu[i])) << "tensor " << i << " " << describe(gpu[i]);
  }
}

double norm_rtol(torch::ScalarType dtype) { return dtype == torch::kDouble ? 1e-12 : 2e-5; }

TEST(CudaMultiTensor, SquaredNormMatchesCpuReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(201);
  for (const auto dtype : kParamDtypes) {
    for (const auto scaling : kScalings) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + tram::ops::to_string(scaling));
      const Lists lists = make_lists(odd_tensor_specs(), dtype, scaling);
      EXPECT_TRUE(kernels_take({lists.gpu_params, lists.gpu_grads}));
      const Tensor on_gpu = tram::ops::squared_norm(lists.gpu_params, lists.gpu_grads, lists.spec);
      const Tensor on_cpu = tram::ops::squared_norm(lists.cpu_params, lists.cpu_grads, lists.spec);
      ASSERT_TRUE(on_gpu.is_cuda());
      EXPECT_EQ(on_gpu.dim(), 0);
      EXPECT_EQ(on_gpu.scalar_type(), on_cpu.scalar_type());
      expect_close(on_gpu, on_cpu, norm_rtol(dtype), 0.0);
    }
  }
}

TEST(CudaMultiTensor, SquaredNormOfMixedDtypesAndManyTensors) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(202);
  // One launch per dtype, one reduction: fp64 when any tensor is fp64.
  Lists mixed;
  mixed.spec.scaling = Scaling::kAdaptive;
  for (const auto dtype : {torch::kBFloat16, torch::kDouble, torch::kFloat, torch::kHalf}) {
    const Lists part = make_lists(odd_tensor_specs(), dtype, Scaling::kAdaptive);
    for (size_t i = 0; i < part.cpu_params.size(); ++i) {
      mixed.cpu_params.push_back(part.cpu_params[i]);
      mixed.cpu_grads.push_back(part.cpu_grads[i]);
      mixed.gpu_params.push_back(part.gpu_params[i]);
      mixed.gpu_grads.push_back(part.gpu_grads[i]);
      mixed.spec.eta.push_back(part.spec.eta[i]);
    }
  }
  const Tensor mixed_gpu = tram::ops::squared_norm(mixed.gpu_params, mixed.gpu_grads, mixed.spec);
  EXPECT_EQ(mixed_gpu.scalar_type(), torch::kDouble);
  expect_close(mixed_gpu,
               tram::ops::squared_norm(mixed.cpu_params, mixed.cpu_grads, mixed.spec), 1e-6, 0.0);

  for (const auto scaling : {Scaling::kIdentity, Scaling::kFisher}) {
    const Lists many = make_lists(many_small_tensor_specs(), torch::kFloat, scaling);
    expect_close(tram::ops::squared_norm(many.gpu_params, many.gpu_grads, many.spec),
                 tram::ops::squared_norm(many.cpu_params, many.cpu_grads, many.spec), 2e-5, 0.0);
  }
}

TEST(CudaMultiTensor, SquaredNormIsDeterministicAndPropagatesNonFiniteGradients) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(203);
  Lists lists = make_lists(odd_tensor_specs(), torch::kFloat, Scaling::kIdentity);
  const Tensor first = tram::ops::squared_norm(lists.gpu_params, lists.gpu_grads, lists.spec);
  for (int repeat = 0; repeat < 3; ++repeat) {
    EXPECT_TRUE(same_bits(first, tram::ops::squared_norm(lists.gpu_params, lists.gpu_grads, lists.spec)));
  }
  // A loss-scaled fp16 pass that overflowed: the engine must see inf / NaN.
  lists.gpu_grads[11].view({-1})[kChunk + 3] = kInf;
  EXPECT_TRUE(std::isinf(tram::ops::squared_norm(lists.gpu_params, lists.gpu_grads, lists.spec).item<float>()));
  lists.gpu_grads[6].view({-1})[5] = kNaN;
  EXPECT_TRUE(std::isnan(tram::ops::squared_norm(lists.gpu_params, lists.gpu_grads, lists.spec).item<float>()));
}

TEST(CudaMultiTensor, AscendWithBackupMatchesCpuReferenceAndBacksUpExactly) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(204);
  for (const auto dtype : kParamDtypes) {
    for (const auto scaling : kScalings) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + tram::ops::to_string(scaling));
      Lists lists = make_lists(odd_tensor_specs(), dtype, scaling);
      std::vector<Tensor> gpu_backups, cpu_backups;
      for (size_t i = 0; i < lists.gpu_params.size(); ++i) {
        // Poisoned, in the parameter's layout, so an unwritten element shows.
        gpu_backups.push_back(torch::full_like(lists.gpu_params[i], kNaN));
        cpu_backups.push_back(torch::full_like(lists.cpu_params[i], kNaN));
      }
      const std::vector<Tensor> original = cpu_copies(lists.cpu_params);
      const std::vector<Tensor> grads_before = cpu_copies(lists.cpu_grads);
      EXPECT_TRUE(kernels_take({lists.gpu_params, lists.gpu_grads, gpu_backups}));
      tram::ops::ascend_with_backup(lists.gpu_params, lists.gpu_grads, gpu_backups, lists.spec);
      tram::ops::ascend_with_backup(lists.cpu_params, lists.cpu_grads, cpu_backups, lists.spec);
      expect_same_bits(gpu_backups, original);
      expect_same_bits(lists.gpu_grads, grads_before);
      expect_params_close(lists.gpu_params, lists.cpu_params);
    }
  }
}

TEST(CudaMultiTensor, AscendFromMatchesCpuReferenceAndLeavesSourcesUntouched) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(205);
  for (const auto dtype : kParamDtypes) {
    for (const auto scaling : kScalings) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + tram::ops::to_string(scaling));
      Lists lists = make_lists(odd_tensor_specs(), dtype, scaling);
      // The sources are the values; params start poisoned.
      const std::vector<Tensor> gpu_sources = lists.gpu_params;
      const std::vector<Tensor> cpu_sources = lists.cpu_params;
      std::vector<Tensor> gpu_params, cpu_params;
      for (size_t i = 0; i < gpu_sources.size(); ++i) {
        gpu_params.push_back(torch::full_like(gpu_sources[i], kNaN));
        cpu_params.push_back(torch::full_like(cpu_sources[i], kNaN));
      }
      const std::vector<Tensor> sources_before = cpu_copies(cpu_sources);
      EXPECT_TRUE(kernels_take({gpu_params, gpu_sources, lists.gpu_grads}));
      tram::ops::ascend_from(gpu_params, gpu_sources, lists.gpu_grads, lists.spec);
      tram::ops::ascend_from(cpu_params, cpu_sources, lists.cpu_grads, lists.spec);
      expect_same_bits(gpu_sources, sources_before);
      expect_params_close(gpu_params, cpu_params);
    }
  }
}

TEST(CudaMultiTensor, CopyAndSwapAreBitExactForEveryDtypeAndLayout) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(206);
  std::vector<Tensor> a, b;
  for (const auto dtype : kParamDtypes) {
    const Lists lists = make_lists(odd_tensor_specs(), dtype, Scaling::kIdentity);
    for (size_t i = 0; i < lists.gpu_params.size(); ++i) {
      a.push_back(lists.gpu_params[i]);
      b.push_back(lists.gpu_grads[i]);
    }
  }
  // Signed zeros and NaN survive a bit copy.
  a[0].fill_(-0.0);
  b[2].fill_(kNaN);
  const Lists many = make_lists(many_small_tensor_specs(), torch::kBFloat16, Scaling::kIdentity);
  a.insert(a.end(), many.gpu_params.begin(), many.gpu_params.end());
  b.insert(b.end(), many.gpu_grads.begin(), many.gpu_grads.end());
  EXPECT_TRUE(kernels_take({a, b}));

  const std::vector<Tensor> a_before = cpu_copies(a);
  const std::vector<Tensor> b_before = cpu_copies(b);
  tram::ops::swap(a, b);
  expect_same_bits(a, b_before);
  expect_same_bits(b, a_before);
  tram::ops::copy(a, b);  // a = a_before
  expect_same_bits(a, a_before);
  expect_same_bits(b, a_before);
}

TEST(CudaMultiTensor, HugeListsOfSmallTensors) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(207);
  for (const auto dtype : {torch::kFloat, torch::kHalf}) {
    Lists lists = make_lists(many_small_tensor_specs(), dtype, Scaling::kAdaptive);
    std::vector<Tensor> gpu_backups, cpu_backups;
    for (size_t i = 0; i < lists.gpu_params.size(); ++i) {
      gpu_backups.push_back(torch::full_like(lists.gpu_params[i], kNaN));
      cpu_backups.push_back(torch::full_like(lists.cpu_params[i], kNaN));
    }
    const std::vector<Tensor> original = cpu_copies(lists.cpu_params);
    tram::ops::ascend_with_backup(lists.gpu_params, lists.gpu_grads, gpu_backups, lists.spec);
    tram::ops::ascend_with_backup(lists.cpu_params, lists.cpu_grads, cpu_backups, lists.spec);
    expect_same_bits(gpu_backups, original);
    expect_params_close(lists.gpu_params, lists.cpu_params);
    tram::ops::copy(lists.gpu_params, gpu_backups);  // the restore
    expect_same_bits(lists.gpu_params, original);
  }
}

#ifdef TRAM_WITH_CUDA
// The in-place kernels' dispatch allocates no host memory per call: the
// launch metadata is the kernels' by-value argument (multi_tensor_launches.h).
TEST(CudaMultiTensor, InPlaceOpCallsAllocateNoHostMemory) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(209);
  Lists lists = make_lists(many_small_tensor_specs(), torch::kFloat, Scaling::kAdaptive);
  std::vector<Tensor> backups;
  for (const Tensor& p : lists.gpu_params) backups.push_back(torch::empty_like(p));
  ASSERT_TRUE(kernels_take({lists.gpu_params, lists.gpu_grads, backups}));
  namespace cuda_ops = tram::ops::cuda_impl;
  const auto calls = [&] {
    cuda_ops::ascend_with_backup(lists.gpu_params, lists.gpu_grads, backups, lists.spec);
    cuda_ops::ascend_from(lists.gpu_params, backups, lists.gpu_grads, lists.spec);
    cuda_ops::swap(lists.gpu_params, backups);
    cuda_ops::copy(lists.gpu_params, backups);
  };
  calls();  // the first calls may initialise streams and handles
  const int64_t before = tram::testing::allocations_on_this_thread();
  calls();
  EXPECT_EQ(tram::testing::allocations_on_this_thread() - before, 0)
      << "host allocations in four in-place op calls over 2000 tensors";
  torch::cuda::synchronize();
}
#endif

TEST(CudaMultiTensor, NonDenseTensorsTakeTheReferenceAndStayCorrect) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(208);
  std::vector<TensorSpec> specs = odd_tensor_specs();
  specs.push_back({{17, 5}, Placement::kStrided});
  // A gradient laid out differently from its (channels-last) parameter:
  // element k of one is not element k of the other.
  Lists strided = make_lists(specs, torch::kFloat, Scaling::kAdaptive);
  Lists mismatched =
      make_lists(odd_tensor_specs(), torch::kFloat, Scaling::kAdaptive, /*grad_placement_follows_param=*/false);
#ifdef TRAM_WITH_CUDA
  EXPECT_FALSE(kernels_take({strided.gpu_params, strided.gpu_grads}));
  EXPECT_FALSE(kernels_take({mismatched.gpu_params, mismatched.gpu_grads}));
#endif
  for (Lists* lists : {&strided, &mismatched}) {
    expect_close(tram::ops::squared_norm(lists->gpu_params, lists->gpu_grads, lists->spec),
                 tram::ops::squared_norm(lists->cpu_params, lists->cpu_grads, lists->spec), 2e-5,
                 0.0);
    std::vector<Tensor> gpu_backups, cpu_backups;
    for (size_t i = 0; i < lists->gpu_params.size(); ++i) {
      gpu_backups.push_back(torch::empty_like(lists->gpu_params[i]));
      cpu_backups.push_back(torch::empty_like(lists->cpu_params[i]));
    }
    tram::ops::ascend_with_backup(lists->gpu_params, lists->gpu_grads, gpu_backups, lists->spec);
    tram::ops::ascend_with_backup(lists->cpu_params, lists->cpu_grads, cpu_backups, lists->spec);
    expect_params_close(lists->gpu_params, lists->cpu_params);
    const std::vector<Tensor> ascended = cpu_copies(lists->gpu_params);
    tram::ops::swap(lists->gpu_params, gpu_backups);
    expect_same_bits(gpu_backups, ascended);
  }
}

TEST(CudaMultiTensor, WritesBumpAutogradVersionCounters) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // Like any in-place op: a graph that saved a parameter must notice the change.
  const Tensor w = torch::randn({1000}, torch::TensorOptions().device(kCuda)).requires_grad_();
  const Tensor g = torch::randn({1000}, torch::TensorOptions().device(kCuda));
  const Tensor backup = torch::empty_like(w);
  AscentSpec spec;
  spec.coef = {0.1};
  const auto w_version = w._version();
  const auto backup_version = backup._version();
  tram::ops::ascend_with_backup({w}, {g}, {backup}, spec);
  EXPECT_GT(w._version(), w_version);
  EXPECT_GT(backup._version(), backup_version);
  const auto before_copy = w._version();
  tram::ops::copy({w}, {backup});
  EXPECT_GT(w._version(), before_copy);
}

// ===========================================================================
// The optimizers on the GPU
// ===========================================================================

// A linear classifier stepped by `method` on `device`; returns its parameters.
std::vector<Tensor> train_linear(const std::string& method, const torch::Device& device) {
  torch::manual_seed(301);
  const auto fp32 = torch::TensorOptions().dtype(torch::kFloat);
  const Tensor x = torch::randn({64, 10}, fp32);
  const Tensor y = torch::randint(0, 4, {64}, torch::kLong);
  torch::nn::Linear model(10, 4);
  model->to(device);
  const Tensor inputs = x.to(device);
  const Tensor labels = y.to(device);
  const bool plain_base = method == "sgd";
  auto optimizer = tram::make_optimizer(
      method, model->parameters(),
      tram::parse_options(std::string(plain_base ? "" : "base=sgd,") + "lr=0.5,momentum=0.9"));
  optimizer->set_module(model.ptr());
  for (int step = 0; step < 4; ++step) {
    optimizer->step([&](const tram::Pass& pass) -> tram::PassOutput {
      const Tensor logits = model->forward(pass.perturb(inputs));
      return {torch::nn::functional::cross_entropy(logits, labels), logits, {}};
    });
  }
  std::vector<Tensor> params;
  for (const auto& p : model->parameters()) params.push_back(p.detach().cpu());
  return params;
}

TEST(CudaOptimizers, MethodsStepOnTheGpuAsOnTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // Methods without random noise: the GPU and CPU runs see the same numbers.
  for (const std::string method :
       {"sgd", "sam", "asam", "fsam", "tram-prev", "tram-pre", "trpo", "mesa", "asam+trpo"}) {
    SCOPED_TRACE(method);
    const auto on_gpu = train_linear(method, kCuda);
    const auto on_cpu = train_linear(method, torch::kCPU);
    ASSERT_EQ(on_gpu.size(), on_cpu.size());
    for (size_t i = 0; i < on_gpu.size(); ++i) expect_close(on_gpu[i], on_cpu[i], 1e-4, 1e-5);
  }
}

TEST(CudaBuild, KernelsAreCompiledIn) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
#ifndef TRAM_WITH_CUDA
  GTEST_SKIP() << "tram was built without TRAM_WITH_CUDA: CUDA tensors ran the ATen reference "
                  "and the kernels are untested";
#endif
}

}  // namespace
