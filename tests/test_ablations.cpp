// The paper's ablations and the step options every method with an ascent
// takes (docs/ALGORITHMS.md §1, §3-5): TRAM-EMA and its limits, the L2 and MMD
// distances, interval, SAM-ON's per-group perturb, the proportional radius
// schedule and the step report's diagnostics. Float64, against formulas
// written here with plain tensor ops.
#include <tram/tram.h>

#include "test_util.h"

#include <map>

namespace {

using torch::Tensor;
using tram::test::Problem;

using tram::test::error_of;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Runs `method` for `steps` steps on a fresh Problem and returns its parameters after each.
std::vector<std::vector<Tensor>> trajectory(const std::string& method, const std::string& options, int steps = 5) {
  Problem p;
  auto opt = tram::make_optimizer(method, p.params(), tram::parse_options(options));
  std::vector<std::vector<Tensor>> out;
  for (int i = 0; i < steps; ++i) {
    opt->step(p.forward_closure());
    out.push_back(p.values());
  }
  return out;
}

void expect_bit_identical(const std::vector<std::vector<Tensor>>& a, const std::vector<std::vector<Tensor>>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t t = 0; t < a.size(); ++t) {
    for (size_t i = 0; i < a[t].size(); ++i) EXPECT_TRUE(torch::equal(a[t][i], b[t][i])) << "step " << t;
  }
}

TEST(TramEma, TargetDecayZeroIsTramPrevAndOneIsTramPreBitForBit) {
  const std::string options = "base=adam,lr=0.05,scale=20";
  const auto prev = trajectory("tram-prev", options);
  const auto pre = trajectory("tram-pre", options);
  expect_bit_identical(trajectory("tram-ema", options + ",target_decay=0"), prev);
  expect_bit_identical(trajectory("tram-ema", options + ",target_decay=1"), pre);
  // The default decay is neither limit.
  const auto ema = trajectory("tram-ema", options);
  EXPECT_FALSE(torch::equal(ema.back()[0], prev.back()[0]));
  EXPECT_FALSE(torch::equal(ema.back()[0], pre.back()[0]));
}

TEST(TramEma, ResumesBitIdenticallyWithItsTargetParameters) {
  const auto options = tram::parse_options("base=adam,lr=0.05,scale=20,target_decay=0.7");
  Problem straight;
  auto a = tram::make_optimizer("tram-ema", straight.params(), options);
  for (int i = 0; i < 6; ++i) a->step(straight.forward_closure());

  Problem resumed;
  auto b = tram::make_optimizer("tram-ema", resumed.params(), options);
  for (int i = 0; i < 3; ++i) b->step(resumed.forward_closure());
  std::stringstream buffer;
  torch::save(*b, buffer);
  Problem copy;
  {
    torch::NoGradGuard no_grad;
    copy.weight.copy_(resumed.weight);
    copy.bias.copy_(resumed.bias);
  }
  auto c = tram::make_optimizer("tram-ema", copy.params(), options);
  torch::load(*c, buffer);
  for (int i = 0; i < 3; ++i) c->step(copy.forward_closure());
  EXPECT_TRUE(torch::equal(straight.weight, copy.weight));
  EXPECT_TRUE(torch::equal(straight.bias, copy.bias));
}

// The L2 and MMD distances straight from their definitions, on [batch, seq,
// classes] logits with a mask: the valid rows of target x and current y.
double l2_reference(const Tensor& x, const Tensor& y, const Tensor& mask) {
  const auto valid = mask.reshape({-1}).to(torch::kBool);
  const auto xr = x.reshape({-1, x.size(-1)}).index({valid}), yr = y.reshape({-1, y.size(-1)}).index({valid});
  double sum = 0;
  for (int64_t r = 0; r < xr.size(0); ++r) sum += std::sqrt((yr[r] - xr[r]).pow(2).sum().item<double>());
  return sum / static_cast<double>(xr.size(0));
}

double mmd_reference(const Tensor& x, const Tensor& y, const Tensor& mask, const std::string& kernel) {
  const auto valid = mask.reshape({-1}).to(torch::kBool);
  const auto xr = x.reshape({-1, x.size(-1)}).index({valid}), yr = y.reshape({-1, y.size(-1)}).index({valid});
  const int64_t n = xr.size(0);
  auto k = [&](const Tensor& u, const Tensor& v) {
    const double s = (u - v).pow(2).sum().item<double>();
    double sum = 0;
    for (double b : {0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0}) {
      if (kernel == "imq2") sum += 1.0 / std::sqrt(b * b + s);
      if (kernel == "imq") sum += b / (b + s);
      if (kernel == "imq3") sum += b * b / (b * b + s);
      if (kernel == "rbf") sum += std::exp(-s / (2 * b));
    }
    return sum;
  };
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) total += k(xr[i], xr[j]) + k(yr[i], yr[j]) - 2 * k(xr[i], yr[j]);
  }
  return total / static_cast<double>(n * n);
}

TEST(Distances, L2AndMmdMatchTheirDefinitionsOverMaskedRowsAndMicroBatches) {
  torch::manual_seed(3);
  const auto x = torch::randn({4, 5, 6}, torch::kFloat64), y = x + 0.3 * torch::randn({4, 5, 6}, torch::kFloat64);
  auto mask = torch::ones({4, 5}, torch::kBool);
  mask.index_put_({0, torch::indexing::Slice(3, 5)}, false);
  mask.index_put_({2, 4}, false);
  // Whole batch, and the same rows in two micro-batches: the same distance.
  auto measure = [&](const std::shared_ptr<const tram::policy::Distance>& distance, bool split) {
    auto sum = distance->start();
    if (split) {
      sum->add(x.narrow(0, 0, 1), y.narrow(0, 0, 1), mask.narrow(0, 0, 1));
      sum->add(x.narrow(0, 1, 3), y.narrow(0, 1, 3), mask.narrow(0, 1, 3));
    } else {
      sum->add(x, y, mask);
    }
    return sum->distance().item<double>();
  };
  for (bool split : {false, true}) {
    const double l2 = l2_reference(x, y, mask);
    EXPECT_NEAR(measure(tram::policy::l2_distance(tram::ops::Reduction::kMean), split), l2, 1e-12);
    EXPECT_NEAR(measure(tram::policy::l2_distance(tram::ops::Reduction::kLegacy), split), l2 / 4, 1e-12);
    const std::map<std::string, tram::MMDKernel> kernels = {{"imq2", tram::MMDKernel::kIMQ2},
                                                            {"imq", tram::MMDKernel::kIMQ},
                                                            {"imq3", tram::MMDKernel::kIMQ3},
                                                            {"rbf", tram::MMDKernel::kRBF}};
    for (const auto& [name, kernel] : kernels) {
      const double mmd = mmd_reference(x, y, mask, name);
      EXPECT_GT(mmd, 0) << name;
      EXPECT_NEAR(measure(tram::policy::mmd_distance(kernel, tram::ops::Reduction::kMean), split), mmd, 1e-10)
          << name;
      EXPECT_NEAR(measure(tram::policy::mmd_distance(kernel, tram::ops::Reduction::kLegacy), split), mmd / 4, 1e-10)
          << name;
    }
  }
  // Identical predictions: both distances are 0.
  auto same = tram::policy::mmd_distance(tram::MMDKernel::kIMQ2, tram::ops::Reduction::kMean)->start();
  same->add(x, x, mask);
  EXPECT_NEAR(same->distance().item<double>(), 0.0, 1e-12);
}

TEST(Distances, MmdRefusesWhatCannotFitAndDataParallelSums) {
  auto sum = tram::policy::mmd_distance(tram::MMDKernel::kIMQ2, tram::ops::Reduction::kMean)->start();
  const auto big = torch::zeros({5000, 2}, torch::kFloat32);
  auto m = error_of([&] { sum->add(big, big, {}); });
  EXPECT_TRUE(contains(m, "5000 valid prediction rows")) << m;
  EXPECT_TRUE(contains(m, "at most 4096")) << m;
  auto small = tram::policy::mmd_distance(tram::MMDKernel::kIMQ2, tram::ops::Reduction::kMean)->start();
  small->add(torch::zeros({3, 2}), torch::ones({3, 2}), {});
  m = error_of([&] { small->totals(); });
  EXPECT_TRUE(contains(m, "data-parallel ranks")) << m;
  m = error_of([&] { tram::policy::mmd_distance(tram::MMDKernel::kRBF, tram::ops::Reduction::kSum); });
  EXPECT_TRUE(contains(m, "divergence=mmd")) << m;
  EXPECT_TRUE(contains(m, "invalid reduction sum")) << m;
}

// Counts the closure's forward passes of every step.
std::vector<int> passes_per_step(const std::string& method, const std::string& options, int steps) {
  Problem p;
  auto opt = tram::make_optimizer(method, p.params(), tram::parse_options(options));
  std::vector<int> counts;
  for (int t = 0; t < steps; ++t) {
    int calls = 0;
    auto report = opt->step([&](const tram::Pass& pass) {
      ++calls;
      return p.forward(pass);
    });
    EXPECT_EQ(report.passes, calls);
    counts.push_back(calls);
  }
  return counts;
}

TEST(Interval, OffStepsAreOnePassAndIntervalOneIsTheMethodItself) {
  EXPECT_EQ(passes_per_step("sam", "interval=3", 7), (std::vector<int>{2, 1, 1, 2, 1, 1, 2}));
  EXPECT_EQ(passes_per_step("tram-prev", "interval=2", 4), (std::vector<int>{3, 1, 3, 1}));
  // A regularizer keeps its target pass on the off-steps: it is part of the loss.
  EXPECT_EQ(passes_per_step("tram-prev+trpo", "interval=2", 4), (std::vector<int>{3, 2, 3, 2}));
  EXPECT_EQ(passes_per_step("tram-fisher", "interval=2,radius=trust_region", 4), (std::vector<int>{3, 1, 3, 1}));
  for (const std::string method : {"sam", "tram-prev", "tram-noise", "asam+trpo"}) {
    SCOPED_TRACE(method);
    const std::string options = method.rfind("tram-", 0) == 0 ? "scale=5" : "lr=0.1";
    expect_bit_identical(trajectory(method, options + ",interval=1"), trajectory(method, options));
  }
  // The off-steps of interval 2 are plain base steps: with rho = 0 the ascent
  // steps are too, so the run is the base's, bit for bit.
  expect_bit_identical(trajectory("sam", "base=adam,rho=0,interval=2"), trajectory("adam", ""));
}

TEST(Interval, PreviousStepParametersFollowOnOffSteps) {
  // TRAM-θt-1 with interval 2: at step 2 the target is θ1, the parameters
  // before step 1's base step, although step 1 ran no target pass.
  Problem p;
  auto opt = tram::make_optimizer("tram-prev", p.params(), tram::parse_options("interval=2,scale=5"));
  opt->step(p.forward_closure());
  const auto theta_1 = p.values();
  opt->step(p.forward_closure());
  Tensor target_logits;
  opt->step([&](const tram::Pass& pass) {
    auto out = p.forward(pass);
    if (pass.kind() == tram::PassKind::kTarget) target_logits = out.logits;
    return out;
  });
  EXPECT_TRUE(torch::equal(target_logits, torch::addmm(theta_1[1], p.x, theta_1[0].t())));
}

TEST(SamOn, GroupsWithoutPerturbAreNeitherMovedNorInTheNorm) {
  Problem p;
  auto base = std::make_shared<torch::optim::SGD>(
      std::vector<torch::optim::OptimizerParamGroup>{{std::vector<Tensor>{p.weight}}, {std::vector<Tensor>{p.bias}}},
      torch::optim::SGDOptions(0.1));
  tram::SAM opt(base, tram::SAMOptions().rho(0.2));
  opt.group_options(1).perturb(false);
  const auto w = p.values();
  const auto g = p.grad(w);
  p.loss().backward();
  opt.first_step();
  // Only the weight moved, along g_weight / ||g_weight|| (the bias is not in the norm).
  const double norm = g[0].norm().item<double>();
  EXPECT_LE((p.weight - (w[0] + 0.2 * g[0] / (norm + 1e-12))).abs().max().item<double>(), 1e-12);
  EXPECT_TRUE(torch::equal(p.bias, w[1]));
  EXPECT_NEAR(opt.last_step().ascent_norm, norm, 1e-12);
  opt.zero_grad();
  p.loss().backward();
  opt.second_step();
  // The base still stepped the bias.
  EXPECT_FALSE(torch::equal(p.bias, w[1]));
}

TEST(SamOn, PerturbSurvivesSaveAndLoad) {
  Problem p;
  auto base = std::make_shared<torch::optim::SGD>(
      std::vector<torch::optim::OptimizerParamGroup>{{std::vector<Tensor>{p.weight}}, {std::vector<Tensor>{p.bias}}},
      torch::optim::SGDOptions(0.1));
  tram::SAM opt(base);
  opt.group_options(0).perturb(false);
  std::stringstream buffer;
  torch::save(opt, buffer);
  Problem q;
  auto base_q = std::make_shared<torch::optim::SGD>(
      std::vector<torch::optim::OptimizerParamGroup>{{std::vector<Tensor>{q.weight}}, {std::vector<Tensor>{q.bias}}},
      torch::optim::SGDOptions(0.1));
  tram::SAM loaded(base_q);
  torch::load(loaded, buffer);
  EXPECT_FALSE(loaded.group_options(0).perturb());
  EXPECT_TRUE(loaded.group_options(1).perturb());
}

TEST(SamOn, SplitsNormalizationLayersByModuleType) {
  auto model = torch::nn::Sequential(torch::nn::Linear(4, 6), torch::nn::LayerNorm(torch::nn::LayerNormOptions({6})),
                                     torch::nn::Linear(6, 6), torch::nn::BatchNorm1d(6),
                                     torch::nn::GroupNorm(2, 6), torch::nn::Linear(6, 2));
  const auto split = tram::split_normalization_parameters(*model);
  EXPECT_EQ(split.normalization.size(), 6u);  // weight and bias of each normalization layer
  EXPECT_EQ(split.others.size(), 6u);
  EXPECT_TRUE(split.normalization[0].is_same(model[1]->parameters()[0]));
  EXPECT_TRUE(split.others[0].is_same(model[0]->parameters()[0]));
  EXPECT_EQ(split.groups().size(), 2u);
}

TEST(ProportionalRadius, FollowsTheLearningRateAndRefusesATrustRegion) {
  Problem p;
  auto opt = tram::make_optimizer("sam", p.params(), tram::parse_options("lr=0.1"));
  tram::ProportionalRadius radius(*opt, /*rho_max=*/0.2, /*rho_min=*/0.02, /*lr_max=*/0.1, /*lr_min=*/0.0);
  EXPECT_DOUBLE_EQ(radius.step(), 0.2);
  opt->param_groups()[0].options().set_lr(0.025);
  EXPECT_DOUBLE_EQ(radius.step(), 0.02 + 0.18 * 0.25);
  EXPECT_DOUBLE_EQ(opt->group_options(0).rho(), 0.02 + 0.18 * 0.25);
  auto tram_opt = tram::make_optimizer("tram-prev", p.params());
  auto m = error_of([&] { tram::ProportionalRadius(*tram_opt, 0.2, 0.02, 0.1, 0.0); });
  EXPECT_TRUE(contains(m, "trust-region distance")) << m;
  m = error_of([&] { tram::ProportionalRadius(*opt, 0.01, 0.02, 0.1, 0.0); });
  EXPECT_TRUE(contains(m, "rho_min <= rho_max")) << m;
}

TEST(Diagnostics, PerturbedLossSharpnessAndPerturbationNorm) {
  Problem p;
  auto opt = tram::make_optimizer("sam", p.params(), tram::parse_options("rho=0.3"));
  const auto w = p.values();
  const auto g = p.grad(w);
  double norm = 0;
  for (const auto& gi : g) norm += gi.pow(2).sum().item<double>();
  norm = std::sqrt(norm);
  std::vector<Tensor> perturbed;
  for (size_t i = 0; i < w.size(); ++i) perturbed.push_back(w[i] + 0.3 * g[i] / (norm + 1e-12));
  const double loss = Problem::loss_at(w, p.x, p.y).item<double>();
  const double perturbed_loss = Problem::loss_at(perturbed, p.x, p.y).item<double>();
  const auto report = opt->step(p.forward_closure());
  EXPECT_NEAR(report.loss, loss, 1e-12);
  EXPECT_NEAR(report.perturbed_loss, perturbed_loss, 1e-12);
  EXPECT_NEAR(report.sharpness, perturbed_loss - loss, 1e-12);
  EXPECT_GT(report.sharpness, 0);
  EXPECT_NEAR(report.perturbation_norm, 0.3 * norm / (norm + 1e-12), 1e-12);
  // The LossClosure form reports the same.
  Problem q;
  auto same = tram::make_optimizer("sam", q.params(), tram::parse_options("rho=0.3"));
  same->step(q.loss_closure(*same));
  EXPECT_NEAR(same->last_step().perturbed_loss, perturbed_loss, 1e-12);
  EXPECT_NEAR(same->last_step().perturbation_norm, report.perturbation_norm, 1e-12);
}

TEST(Ablations, BadOptionsNameTheMethodTheOptionAndTheRange) {
  Problem p;
  auto m = error_of([&] { tram::make_optimizer("tram-ema", p.params(), tram::parse_options("target_decay=1.5")); });
  EXPECT_TRUE(contains(m, "TRAM-EMA") && contains(m, "target_decay") && contains(m, "[0, 1]")) << m;
  m = error_of([&] { tram::make_optimizer("tram-prev", p.params(), tram::parse_options("kernel=rbf")); });
  EXPECT_TRUE(contains(m, "tram-prev") && contains(m, "divergence=mmd")) << m;
  m = error_of(
      [&] { tram::make_optimizer("tram-pre", p.params(), tram::parse_options("divergence=mmd,kernel=gauss")); });
  EXPECT_TRUE(contains(m, "kernel") && contains(m, "imq2, imq, imq3, rbf")) << m;
  m = error_of([&] { tram::make_optimizer("sam", p.params(), tram::parse_options("interval=0")); });
  EXPECT_TRUE(contains(m, "SAM") && contains(m, "interval") && contains(m, ">= 1")) << m;
  m = error_of([&] { tram::make_optimizer("asam", p.params(), tram::parse_options("interval=1.5")); });
  EXPECT_TRUE(contains(m, "asam") && contains(m, "interval") && contains(m, "integer")) << m;
  m = error_of([&] { tram::make_optimizer("trpo", p.params(), tram::parse_options("interval=2")); });
  EXPECT_TRUE(contains(m, "unknown option 'interval'")) << m;
  m = error_of([&] { tram::make_optimizer("sam", p.params(), tram::parse_options("interval=2"))->first_step(); });
  EXPECT_TRUE(contains(m, "interval 2")) << m;
}

}  // namespace
