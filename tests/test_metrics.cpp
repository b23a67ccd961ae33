// Tests of tram::metrics (docs/ALGORITHMS.md §9): linear CKA and epsilon-sharpness.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <tram/metrics.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using tram::metrics::epsilon_sharpness;
using tram::metrics::GramForm;
using tram::metrics::linear_cka;
using tram::metrics::SharpnessOptions;
using tram::metrics::SharpnessResult;

constexpr double kFp64Tolerance = 1e-12;

torch::Tensor random_fp64(std::initializer_list<int64_t> shape) {
  return torch::randn(shape, torch::kFloat64);
}

torch::Tensor random_orthogonal(int64_t size) {
  return std::get<0>(torch::linalg_qr(random_fp64({size, size})));
}

// Runs `call`, which must throw c10::Error whose message starts with `prefix`
// and contains every one of `fragments`.
void expect_error(const std::function<void()>& call, const std::string& prefix,
                  const std::vector<std::string>& fragments) {
  try {
    call();
  } catch (const c10::Error& error) {
    const std::string message = error.what_without_backtrace();
    EXPECT_EQ(message.rfind(prefix, 0), 0u) << "message: " << message;
    for (const std::string& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "missing '" << fragment << "' in: " << message;
    }
    return;
  }
  ADD_FAILURE() << "expected a c10::Error starting with " << prefix;
}

// ---------------------------------------------------------------------------
// Linear CKA
// ---------------------------------------------------------------------------

// The formula of docs/ALGORITHMS.md §9 written out in the test, independently of the
// library's normalisation and choice of form.
double reference_cka(const torch::Tensor& X, const torch::Tensor& Y) {
  const torch::Tensor x = X.to(torch::kFloat64) - X.to(torch::kFloat64).mean(0);
  const torch::Tensor y = Y.to(torch::kFloat64) - Y.to(torch::kFloat64).mean(0);
  const double cross = y.t().mm(x).pow(2).sum().item<double>();
  const double self_x = x.t().mm(x).pow(2).sum().sqrt().item<double>();
  const double self_y = y.t().mm(y).pow(2).sum().sqrt().item<double>();
  return cross / (self_x * self_y);
}

TEST(LinearCka, IdenticalRepresentationsGiveOne) {
  torch::manual_seed(1);
  for (const auto& shape : {std::vector<int64_t>{50, 7}, std::vector<int64_t>{5, 40}}) {
    const torch::Tensor X = random_fp64({shape[0], shape[1]});
    EXPECT_NEAR(linear_cka(X, X), 1.0, kFp64Tolerance) << "shape " << X.sizes();
  }
}

TEST(LinearCka, InvariantToOrthogonalTransformIsotropicScalingAndShift) {
  torch::manual_seed(2);
  const torch::Tensor X = random_fp64({60, 6});
  const torch::Tensor Y = X.mm(random_fp64({6, 4})) + 0.5 * random_fp64({60, 4});
  const double base = linear_cka(X, Y);
  ASSERT_GT(base, 0.1);
  ASSERT_LT(base, 0.99);  // a value that a transform could visibly change

  const torch::Tensor rotated = X.mm(random_orthogonal(6));
  EXPECT_NEAR(linear_cka(rotated, Y), base, kFp64Tolerance);
  EXPECT_NEAR(linear_cka(X, Y.mm(random_orthogonal(4))), base, kFp64Tolerance);
  EXPECT_NEAR(linear_cka(37.5 * X, 1e-3 * Y), base, kFp64Tolerance);
  // A constant added to each column disappears in the centring.
  EXPECT_NEAR(linear_cka(X + random_fp64({1, 6}) * 10.0, Y), base, kFp64Tolerance);
}

TEST(LinearCka, NotInvariantToNonIsotropicColumnScaling) {
  torch::manual_seed(3);
  const torch::Tensor X = random_fp64({200, 4});
  const torch::Tensor column_scales = torch::tensor({1.0, 10.0, 0.1, 3.0}, torch::kFloat64);
  const double stretched = linear_cka(X, X * column_scales);
  // For X^T X ~ n I the value is sum s^2 / (2 sqrt(sum s^4)) ~ 0.55; a formula
  // that normalised columns individually (a correlation) would give 1.
  EXPECT_LT(stretched, 0.7);
  EXPECT_NEAR(stretched, reference_cka(X, X * column_scales), kFp64Tolerance);
}

TEST(LinearCka, FeatureAndSampleFormsAgree) {
  torch::manual_seed(4);
  struct Shape {
    int64_t n, d1, d2;
  };
  // n > d (auto picks the feature form), n <= d (auto picks the sample form),
  // and a mixed one.
  for (const Shape shape : {Shape{64, 8, 5}, Shape{6, 20, 30}, Shape{12, 3, 40}}) {
    const torch::Tensor X = random_fp64({shape.n, shape.d1});
    const torch::Tensor Y =
        X.mm(random_fp64({shape.d1, shape.d2})) + random_fp64({shape.n, shape.d2});
    const double feature = linear_cka(X, Y, GramForm::kFeature);
    const double sample = linear_cka(X, Y, GramForm::kSample);
    const double automatic = linear_cka(X, Y);
    EXPECT_NEAR(feature, sample, kFp64Tolerance) << "n=" << shape.n;
    EXPECT_NEAR(automatic, feature, kFp64Tolerance) << "n=" << shape.n;
    EXPECT_NEAR(feature, reference_cka(X, Y), kFp64Tolerance) << "n=" << shape.n;
    EXPECT_LT(feature, 1.0 - 1e-3) << "data too similar to tell the forms apart";
  }
}

TEST(LinearCka, MatchesHandComputedClosedForms) {
  // Already centred. X^T X = 2 I, so ||X^T X||_F = 2 sqrt(2); Y^T Y = 2;
  // Y^T X = [2, 0], squared norm 4: CKA = 4 / (2 sqrt(2) * 2) = 1 / sqrt(2).
  const torch::Tensor X =
      torch::tensor({1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0}, torch::kFloat64).reshape({4, 2});
  const torch::Tensor Y = torch::tensor({1.0, 0.0, -1.0, 0.0}, torch::kFloat64).reshape({4, 1});
  EXPECT_NEAR(linear_cka(X, Y), 1.0 / std::sqrt(2.0), kFp64Tolerance);
  EXPECT_NEAR(linear_cka(X, Y, GramForm::kSample), 1.0 / std::sqrt(2.0), kFp64Tolerance);
  // Shifting and scaling Y changes nothing.
  EXPECT_NEAR(linear_cka(X, 3.0 * Y + 5.0), 1.0 / std::sqrt(2.0), kFp64Tolerance);

  // One feature each: CKA is the squared Pearson correlation.
  torch::manual_seed(5);
  const torch::Tensor a = random_fp64({30});
  const torch::Tensor b = 0.7 * a + random_fp64({30});
  const torch::Tensor ac = a - a.mean();
  const torch::Tensor bc = b - b.mean();
  const double correlation =
      (ac * bc).sum().item<double>() / std::sqrt((ac * ac).sum().item<double>() *
                                                  (bc * bc).sum().item<double>());
  EXPECT_NEAR(linear_cka(a.unsqueeze(1), b.unsqueeze(1)), correlation * correlation,
              kFp64Tolerance);
}

TEST(LinearCka, IsSymmetricAndInUnitInterval) {
  torch::manual_seed(6);
  for (int trial = 0; trial < 5; ++trial) {
    const torch::Tensor X = random_fp64({25, 9});
    const torch::Tensor Y = torch::tanh(X.mm(random_fp64({9, 3}))) + 0.3 * random_fp64({25, 3});
    const double forward = linear_cka(X, Y);
    EXPECT_NEAR(forward, linear_cka(Y, X), kFp64Tolerance);
    EXPECT_GE(forward, 0.0);
    EXPECT_LE(forward, 1.0 + kFp64Tolerance);
  }
}

TEST(LinearCka, ComputesInFp64ForEveryFloatingDtype) {
  torch::manual_seed(7);
  const torch::Tensor X = torch::randn({40, 5});
  const torch::Tensor Y = X.mm(torch::randn({5, 6})) + torch::randn({40, 6});
  // The fp32 input is widened before any arithmetic: same value as on its
  // exact fp64 copy.
  EXPECT_DOUBLE_EQ(linear_cka(X, Y), linear_cka(X.to(torch::kFloat64), Y.to(torch::kFloat64)));
  for (const auto dtype : {torch::kFloat16, torch::kBFloat16}) {
    const torch::Tensor Xr = X.to(dtype);
    const torch::Tensor Yr = Y.to(dtype);
    EXPECT_NEAR(linear_cka(Xr, Yr), reference_cka(Xr, Yr), kFp64Tolerance) << dtype;
  }
  // Inputs that require grad are measured without recording a graph.
  const torch::Tensor tracked = X.clone().requires_grad_(true);
  EXPECT_DOUBLE_EQ(linear_cka(tracked, Y), linear_cka(X, Y));
}

TEST(LinearCka, ConstantRepresentationGivesNaN) {
  torch::manual_seed(8);
  const torch::Tensor X = random_fp64({10, 3});
  const torch::Tensor constant = torch::full({10, 4}, 0.1, torch::kFloat64);
  EXPECT_TRUE(std::isnan(linear_cka(X, constant)));
  EXPECT_TRUE(std::isnan(linear_cka(constant, X)));
  EXPECT_TRUE(std::isnan(linear_cka(constant, X, GramForm::kSample)));
  EXPECT_TRUE(std::isnan(linear_cka(X, torch::empty({10, 0}, torch::kFloat64))));
  // One constant column among informative ones is not degenerate.
  EXPECT_FALSE(std::isnan(linear_cka(X, torch::cat({X, constant}, 1))));
  EXPECT_NEAR(linear_cka(X, torch::cat({X, constant}, 1)), 1.0, kFp64Tolerance);
}

TEST(LinearCka, RejectsBadInput) {
  const std::string prefix = "tram::metrics::linear_cka:";
  const torch::Tensor good = torch::randn({8, 3});
  expect_error([&] { linear_cka(torch::randn({8, 3, 2}), good); }, prefix,
               {"X must be 2-D", "[8, 3, 2]", "flatten"});
  expect_error([&] { linear_cka(good, torch::randn({8})); }, prefix, {"Y must be 2-D"});
  expect_error([&] { linear_cka(good, torch::randn({9, 3})); }, prefix,
               {"same number of rows", "[8, 3]", "[9, 3]"});
  expect_error([&] { linear_cka(torch::randn({1, 3}), torch::randn({1, 2})); }, prefix,
               {"at least 2 examples", "got 1"});
  expect_error([&] { linear_cka(torch::ones({8, 3}, torch::kLong), good); }, prefix,
               {"floating dtype", "Long", ".to(torch::kFloat)"});
  expect_error([&] { linear_cka(good, torch::randn({8, 3}, torch::kComplexFloat)); }, prefix,
               {"Y must have a real floating dtype"});
  expect_error([&] { linear_cka(torch::Tensor(), good); }, prefix, {"X is undefined"});
}

TEST(LinearCka, AgreesOnCudaWhenAvailable) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(9);
  const torch::Tensor X = torch::randn({128, 16});
  const torch::Tensor Y = X.mm(torch::randn({16, 8})) + torch::randn({128, 8});
  const double on_cpu = linear_cka(X, Y);
  EXPECT_NEAR(linear_cka(X.cuda(), Y.cuda()), on_cpu, 1e-10);
  const torch::Tensor Xh = X.to(torch::kFloat16);
  const torch::Tensor Yh = Y.to(torch::kFloat16);
  EXPECT_NEAR(linear_cka(Xh.cuda(), Yh.cuda()), linear_cka(Xh, Yh), 1e-10);
  expect_error([&] { linear_cka(X.cuda(), Y); }, "tram::metrics::linear_cka:",
               {"same device"});
}

// ---------------------------------------------------------------------------
// epsilon-sharpness
// ---------------------------------------------------------------------------

// L(w) = 0.5 * sum_i a_i w_i^2 over the weight and bias of a fp64 Linear(3, 1):
// gradient a * w, known exactly, so the ascent can be replayed in the test.
struct QuadraticProblem {
  torch::nn::Linear model{torch::nn::LinearOptions(3, 1)};
  torch::Tensor weight_curvature = torch::tensor({{1.0, 0.1, 4.0}}, torch::kFloat64);
  torch::Tensor bias_curvature = torch::tensor({0.05}, torch::kFloat64);

  QuadraticProblem() {
    model->to(torch::kFloat64);
    torch::NoGradGuard no_grad;
    model->weight.copy_(torch::tensor({{1.0, -2.0, 0.5}}, torch::kFloat64));
    model->bias.copy_(torch::tensor({0.3}, torch::kFloat64));
  }

  torch::Tensor loss() const {
    return 0.5 * (weight_curvature * model->weight.pow(2)).sum() +
           0.5 * (bias_curvature * model->bias.pow(2)).sum();
  }

  std::function<torch::Tensor(int64_t)> batch_loss() const {
    return [this](int64_t) { return loss(); };
  }

  // All parameters as one vector, and their curvatures in the same order.
  torch::Tensor flat_weights() const {
    return torch::cat({model->weight.detach().flatten(), model->bias.detach()});
  }
  torch::Tensor flat_curvature() const {
    return torch::cat({weight_curvature.flatten(), bias_curvature});
  }

  // docs/ALGORITHMS.md §9 replayed with plain tensor ops: projected gradient ascent from 0.
  double expected_sharpness(const SharpnessOptions& options) const {
    const torch::Tensor w = flat_weights();
    const torch::Tensor a = flat_curvature();
    const torch::Tensor bound = options.epsilon() * (w.abs() + 1.0);
    torch::Tensor y = torch::zeros_like(w);
    for (int64_t step = 0; step < options.steps(); ++step) {
      y = torch::minimum(torch::maximum(y + options.lr() * a * (w + y), -bound), bound);
    }
    const double base = (0.5 * a * w * w).sum().item<double>();
    const double perturbed = (0.5 * a * (w + y) * (w + y)).sum().item<double>();
    return 100.0 * (std::max(base, perturbed) - base) / (1.0 + base);
  }
};

std::vector<torch::Tensor> snapshot(const torch::nn::Module& module) {
  std::vector<torch::Tensor> copies;
  for (const auto& param : module.parameters()) copies.push_back(param.detach().clone());
  for (const auto& buffer : module.buffers()) copies.push_back(buffer.detach().clone());
  return copies;
}

void expect_bit_identical(const torch::nn::Module& module,
                          const std::vector<torch::Tensor>& before) {
  const std::vector<torch::Tensor> after = snapshot(module);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(torch::equal(after[i], before[i])) << "tensor " << i << " changed";
  }
}

TEST(EpsilonSharpness, QuadraticOneStepIsTheClampedGradientStep) {
  QuadraticProblem problem;
  const SharpnessOptions options = SharpnessOptions().steps(1);

  // The problem must exercise both sides of the projection: with lr 8e-5 and
  // eps 1e-5, lr a w leaves the box for w = 1 (a = 1), 0.5 (a = 4) and stays
  // inside for w = -2 (a = 0.1) and the bias 0.3 (a = 0.05).
  const torch::Tensor w = problem.flat_weights();
  const torch::Tensor step = options.lr() * problem.flat_curvature() * w;
  const torch::Tensor bound = options.epsilon() * (w.abs() + 1.0);
  const torch::Tensor outside = step.abs() > bound;
  ASSERT_TRUE(torch::equal(outside, torch::tensor({true, false, true, false})));

  const torch::Tensor y = torch::minimum(torch::maximum(step, -bound), bound);
  const torch::Tensor a = problem.flat_curvature();
  const double base = (0.5 * a * w * w).sum().item<double>();
  const double perturbed = (0.5 * a * (w + y) * (w + y)).sum().item<double>();
  const double expected = 100.0 * (perturbed - base) / (1.0 + base);

  const SharpnessResult result =
      epsilon_sharpness(*problem.model, problem.batch_loss(), /*num_batches=*/3, options);
  EXPECT_NEAR(result.base_loss, base, 1e-15);
  EXPECT_NEAR(result.perturbed_loss, perturbed, 1e-15);
  EXPECT_GT(result.perturbed_loss, result.base_loss);
  EXPECT_NEAR(result.sharpness, expected, 1e-9 * expected);
  // The same from an evaluation routine that runs under no-grad.
  {
    torch::NoGradGuard no_grad;
    EXPECT_EQ(epsilon_sharpness(*problem.model, problem.batch_loss(), 3, options).sharpness,
              result.sharpness);
  }
  // Without the projection the unclamped step would give a far larger value.
  const double unclamped =
      100.0 * ((0.5 * a * (w + step) * (w + step)).sum().item<double>() - base) / (1.0 + base);
  EXPECT_GT(unclamped, 1.5 * result.sharpness);
}

TEST(EpsilonSharpness, QuadraticSeveralStepsMatchReplayedAscent) {
  QuadraticProblem problem;
  for (const int64_t steps : {2, 5, 10}) {
    // A smaller lr keeps coordinates inside the box for a few steps, so each
    // step's gradient at w + y matters.
    const SharpnessOptions options = SharpnessOptions().steps(steps).lr(2e-6).epsilon(1e-5);
    const double expected = problem.expected_sharpness(options);
    const SharpnessResult result =
        epsilon_sharpness(*problem.model, problem.batch_loss(), 2, options);
    EXPECT_NEAR(result.sharpness, expected, 1e-9 * expected) << "steps " << steps;
  }
  EXPECT_LT(problem.expected_sharpness(SharpnessOptions().steps(2).lr(2e-6)),
            problem.expected_sharpness(SharpnessOptions().steps(10).lr(2e-6)));
}

TEST(EpsilonSharpness, LargeLearningRateReachesTheBoxCornerMaximum) {
  // A convex separable quadratic is maximised over the box at the corner
  // y = eps (|w| + 1) sign(w); one long ascent step lands exactly there.
  QuadraticProblem problem;
  const SharpnessOptions options = SharpnessOptions().steps(1).lr(10.0).epsilon(1e-4);
  const torch::Tensor w = problem.flat_weights();
  const torch::Tensor a = problem.flat_curvature();
  const torch::Tensor corner = w + options.epsilon() * (w.abs() + 1.0) * w.sign();
  const double base = (0.5 * a * w * w).sum().item<double>();
  const double maximum = (0.5 * a * corner * corner).sum().item<double>();
  const SharpnessResult result = epsilon_sharpness(*problem.model, problem.batch_loss(), 1, options);
  EXPECT_NEAR(result.sharpness, 100.0 * (maximum - base) / (1.0 + base), 1e-9);
}

TEST(EpsilonSharpness, LargerEpsilonGivesLargerOrEqualSharpnessOnConvexLoss) {
  QuadraticProblem problem;
  double previous = -1.0;
  for (const double epsilon : {0.0, 1e-6, 1e-5, 1e-4, 1e-3}) {
    const double sharpness =
        epsilon_sharpness(*problem.model, problem.batch_loss(), 1,
                          SharpnessOptions().epsilon(epsilon).lr(1e-2))
            .sharpness;
    if (epsilon == 0.0) {
      EXPECT_EQ(sharpness, 0.0);
    }
    EXPECT_GE(sharpness, previous) << "epsilon " << epsilon;
    previous = sharpness;
  }
  EXPECT_GT(previous, 0.0);
}

TEST(EpsilonSharpness, IsZeroWhenTheAscentLowersTheMeanLoss) {
  // Batch 0 pulls w up, batch 1 (three times stronger) down; the ascent only
  // sees batch 0, so the mean loss drops. The maximum includes y = 0.
  torch::nn::Linear model(torch::nn::LinearOptions(1, 1).bias(false));
  model->to(torch::kFloat64);
  {
    torch::NoGradGuard no_grad;
    model->weight.fill_(1.0);
  }
  auto batch_loss = [&](int64_t batch) {
    const torch::Tensor w = model->weight.sum();
    return batch == 0 ? 5.0 + w : 5.0 - 3.0 * w;
  };
  const SharpnessResult result = epsilon_sharpness(
      *model, batch_loss, /*num_batches=*/2, SharpnessOptions().steps(1).accumulation(1));
  EXPECT_DOUBLE_EQ(result.base_loss, 4.0);
  EXPECT_LT(result.perturbed_loss, result.base_loss);
  EXPECT_EQ(result.sharpness, 0.0);
}

// A small network with dropout and batch norm: something that eval mode
// changes, and buffers that must not move.
struct SmallNet : torch::nn::Module {
  torch::nn::Linear hidden{nullptr}, output{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
  torch::nn::Dropout dropout{nullptr};
  SmallNet() {
    hidden = register_module("hidden", torch::nn::Linear(6, 16));
    norm = register_module("norm", torch::nn::BatchNorm1d(16));
    dropout = register_module("dropout", torch::nn::Dropout(0.5));
    output = register_module("output", torch::nn::Linear(16, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return output(dropout(torch::relu(norm(hidden(x)))));
  }
};

struct ClassificationData {
  std::vector<torch::Tensor> inputs, labels;
  explicit ClassificationData(int64_t batches) {
    for (int64_t i = 0; i < batches; ++i) {
      inputs.push_back(torch::randn({8, 6}));
      labels.push_back(torch::randint(0, 3, {8}));
    }
  }
};

TEST(EpsilonSharpness, RestoresParametersGradientsAndModes) {
  torch::manual_seed(10);
  auto net = std::make_shared<SmallNet>();
  ClassificationData data(3);
  // A user's gradients from an earlier backward, and one left undefined.
  torch::nn::functional::cross_entropy(net->forward(data.inputs[0]), data.labels[0]).backward();
  net->output->bias.mutable_grad() = torch::Tensor();
  const torch::Tensor weight_grad = net->hidden->weight.grad();
  const torch::Tensor weight_grad_copy = weight_grad.clone();
  // Mixed modes: the root in training, one child deliberately in eval.
  net->train();
  net->dropout->eval();
  const std::vector<torch::Tensor> before = snapshot(*net);

  std::vector<bool> training_seen;
  auto batch_loss = [&](int64_t batch) {
    training_seen.push_back(net->is_training() || net->dropout->is_training() ||
                            net->norm->is_training());
    return torch::nn::functional::cross_entropy(net->forward(data.inputs[batch]),
                                                data.labels[batch]);
  };
  const SharpnessResult result =
      epsilon_sharpness(*net, batch_loss, 3, SharpnessOptions().epsilon(1e-3).lr(1e-2));

  EXPECT_GT(result.sharpness, 0.0);
  EXPECT_GE(result.perturbed_loss, result.base_loss);
  for (const bool training : training_seen) EXPECT_FALSE(training);
  EXPECT_EQ(training_seen.size(), 3u + 10u * 4u + 3u);
  expect_bit_identical(*net, before);  // parameters and BatchNorm running stats
  EXPECT_TRUE(net->is_training());
  EXPECT_TRUE(net->hidden->is_training());
  EXPECT_FALSE(net->dropout->is_training());
  EXPECT_TRUE(net->hidden->weight.grad().is_same(weight_grad));
  EXPECT_TRUE(torch::equal(weight_grad, weight_grad_copy));
  EXPECT_FALSE(net->output->bias.grad().defined());
}

TEST(EpsilonSharpness, ThrowingBatchLossLeavesParametersRestored) {
  torch::manual_seed(11);
  auto net = std::make_shared<SmallNet>();
  ClassificationData data(2);
  net->train();
  const std::vector<torch::Tensor> before = snapshot(*net);
  const torch::Tensor original_weight = net->hidden->weight.detach().clone();
  const SharpnessOptions options = SharpnessOptions().steps(3).epsilon(1e-3).lr(1e-1);
  // Throw in the middle of the ascent, and in the final evaluation.
  const int64_t ascent_calls = options.steps() * options.accumulation();
  for (const int64_t throwing_call : {int64_t{2} + 6, int64_t{2} + ascent_calls + 1}) {
    int64_t calls = 0;
    bool perturbed_when_thrown = false;
    auto batch_loss = [&](int64_t batch) {
      if (calls++ == throwing_call) {
        perturbed_when_thrown = !torch::equal(net->hidden->weight.detach(), original_weight);
        throw std::runtime_error("loss failed");
      }
      return torch::nn::functional::cross_entropy(net->forward(data.inputs[batch]),
                                                  data.labels[batch]);
    };
    EXPECT_THROW(epsilon_sharpness(*net, batch_loss, 2, options), std::runtime_error);
    EXPECT_TRUE(perturbed_when_thrown) << "call " << throwing_call << " ran unperturbed";
    expect_bit_identical(*net, before);
    EXPECT_TRUE(net->is_training());
    EXPECT_TRUE(net->dropout->is_training());
  }
}

TEST(EpsilonSharpness, VisitsBatchesInTheDocumentedOrder) {
  QuadraticProblem problem;
  std::vector<int64_t> visited;
  auto batch_loss = [&](int64_t batch) {
    visited.push_back(batch);
    return problem.loss();
  };
  epsilon_sharpness(*problem.model, batch_loss, 3, SharpnessOptions().steps(2).accumulation(4));
  const std::vector<int64_t> expected = {0, 1, 2,         // L(w)
                                         0, 1, 2, 0,      // ascent step 0
                                         1, 2, 0, 1,      // ascent step 1
                                         0, 1, 2};        // L(w + y)
  EXPECT_EQ(visited, expected);
}

TEST(EpsilonSharpness, FrozenParametersAreNotPerturbed) {
  QuadraticProblem problem;
  problem.model->bias.requires_grad_(false);
  const torch::Tensor frozen_bias = problem.model->bias.detach().clone();
  const torch::Tensor weight = problem.model->weight.detach().clone();
  bool bias_moved = false;
  bool weight_moved = false;
  auto batch_loss = [&](int64_t) {
    bias_moved = bias_moved || !torch::equal(problem.model->bias.detach(), frozen_bias);
    weight_moved = weight_moved || !torch::equal(problem.model->weight.detach(), weight);
    return problem.loss();
  };
  const SharpnessResult result =
      epsilon_sharpness(*problem.model, batch_loss, 1, SharpnessOptions().steps(2));
  EXPECT_FALSE(bias_moved);
  EXPECT_TRUE(weight_moved);
  EXPECT_GT(result.sharpness, 0.0);
}

TEST(EpsilonSharpness, ZeroStepsMeasuresNothing) {
  QuadraticProblem problem;
  int64_t calls = 0;
  auto batch_loss = [&](int64_t) {
    ++calls;
    return problem.loss();
  };
  const SharpnessResult result =
      epsilon_sharpness(*problem.model, batch_loss, 2, SharpnessOptions().steps(0));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(result.sharpness, 0.0);
  EXPECT_EQ(result.perturbed_loss, result.base_loss);
}

TEST(EpsilonSharpness, RejectsBadOptionsAndLosses) {
  const std::string prefix = "tram::metrics::epsilon_sharpness:";
  QuadraticProblem problem;
  auto& model = *problem.model;
  const auto loss = problem.batch_loss();
  expect_error([&] { epsilon_sharpness(model, loss, 1, SharpnessOptions().epsilon(-1e-5)); },
               prefix, {"invalid epsilon: -1e-05"});
  expect_error([&] { epsilon_sharpness(model, loss, 1, SharpnessOptions().epsilon(NAN)); },
               prefix, {"invalid epsilon: nan"});
  expect_error([&] { epsilon_sharpness(model, loss, 1, SharpnessOptions().lr(-1.0)); }, prefix,
               {"invalid lr: -1"});
  expect_error([&] { epsilon_sharpness(model, loss, 1, SharpnessOptions().lr(INFINITY)); },
               prefix, {"invalid lr: inf"});
  expect_error([&] { epsilon_sharpness(model, loss, 1, SharpnessOptions().steps(-1)); }, prefix,
               {"invalid steps: -1"});
  expect_error([&] { epsilon_sharpness(model, loss, 1, SharpnessOptions().accumulation(0)); },
               prefix, {"invalid accumulation: 0"});
  expect_error([&] { epsilon_sharpness(model, loss, 0); }, prefix, {"invalid num_batches: 0"});
  expect_error([&] { epsilon_sharpness(model, nullptr, 1); }, prefix, {"batch_loss is empty"});
  expect_error(
      [&] {
        epsilon_sharpness(model, [&](int64_t) { return problem.loss().reshape({1}).repeat(2); }, 1);
      },
      prefix, {"batch_loss(0)", "one-element", "[2]", ".mean()"});
  expect_error([&] { epsilon_sharpness(model, [&](int64_t) { return problem.loss().detach(); }, 1); },
               prefix, {"without autograd graph"});
  expect_error([&] { epsilon_sharpness(model, [&](int64_t) { return problem.loss() - 5.0; }, 1); },
               prefix, {"1 + L(w) <= 0", "non-negative"});
}

}  // namespace
