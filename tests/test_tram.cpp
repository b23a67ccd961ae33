// The TRAM variants and the trust-region regularizers against docs/ALGORITHMS.md §3-7.
//
// Each test runs the optimizer for a few steps on a float64 linear softmax
// classifier over changing batches, and a reference written here from the
// documented formulas (plain tensor ops; autograd only to differentiate the loss),
// which keeps explicit copies of θt-1, θ0 and the EMA.
#include <tram/tram.h>

#include "test_util.h"

namespace {

using torch::Tensor;
using Params = std::vector<Tensor>;

constexpr double kTol = 1e-10;
constexpr int kSteps = 4;

Tensor logits_at(const Params& w, const Tensor& x) { return torch::addmm(w[1], x, w[0].t()); }

// Forward KL per docs/ALGORITHMS.md §5, mean over rows, from the definition.
Tensor kl(const Tensor& target_logits, const Tensor& current_logits) {
  auto lt = torch::log_softmax(target_logits, -1), lc = torch::log_softmax(current_logits, -1);
  return (lt.exp() * (lt - lc)).sum(-1).mean();
}

Params add(const Params& a, const Params& b, double scale = 1.0) {
  Params out;
  for (size_t i = 0; i < a.size(); ++i) out.push_back(a[i] + scale * b[i]);
  return out;
}

Params detached(const Params& w) {
  Params out;
  for (const auto& t : w) out.push_back(t.detach().clone());
  return out;
}

// Gradient of loss(w) with respect to w.
Params grad_of(const Params& w, const std::function<Tensor(const Params&)>& loss) {
  Params leaves;
  for (const auto& t : w) leaves.push_back(t.detach().clone().requires_grad_(true));
  return torch::autograd::grad({loss(leaves)}, leaves);
}

Params asam_e(const Params& w, const Params& g, double r, double eta) {
  double sq = 0;
  for (size_t i = 0; i < w.size(); ++i) sq += ((w[i].abs() + eta) * g[i]).pow(2).sum().item<double>();
  Params e;
  for (size_t i = 0; i < w.size(); ++i) e.push_back(r * (w[i].abs() + eta).pow(2) * g[i] / (std::sqrt(sq) + 1e-12));
  return e;
}

Params fisher_e(const Params& g, double gamma, double eta_f) {
  double sq = 0;
  for (const auto& gi : g) sq += (gi.pow(2) / (1 + eta_f * gi.pow(2))).sum().item<double>();
  Params e;
  for (const auto& gi : g) e.push_back(gamma * gi / (1 + eta_f * gi.pow(2)) / std::sqrt(sq + 1e-12));
  return e;
}

// Changing batches and fixed noise per step, shared by optimizer and reference.
struct Data {
  std::vector<Tensor> x, y, noise;
  explicit Data(double sigma = 0.3) {
    torch::manual_seed(11);
    for (int t = 0; t < kSteps; ++t) {
      x.push_back(torch::randn({8, 4}, torch::kFloat64));
      y.push_back(torch::randint(0, 3, {8}, torch::kLong));
      noise.push_back(sigma * torch::randn({8, 4}, torch::kFloat64));
    }
  }
  Tensor ce(const Params& w, int t, bool noisy = false) const {
    return torch::nn::functional::cross_entropy(logits_at(w, noisy ? x[t] + noise[t] : x[t]), y[t]);
  }
};

// Runs `method` for kSteps with SGD(lr) and returns the parameters after each
// step, plus the reported distances.
struct Run {
  std::vector<Params> params;
  std::vector<tram::StepReport> reports;
};

Run run_optimizer(const std::string& method, const std::string& options, const Data& data,
                  tram::test::Problem& p) {
  auto opt = tram::make_optimizer(method, p.params(), tram::parse_options("lr=0.5," + options));
  int t = 0;
  opt->set_noise_sampler([&](const Tensor& embeddings, const tram::NoiseOptions&, const tram::Pass&) {
    EXPECT_EQ(embeddings.sizes(), data.noise[t].sizes());
    return data.noise[t];
  });
  Run run;
  for (t = 0; t < kSteps; ++t) {
    auto report = opt->step([&](const tram::Pass& pass) -> tram::PassOutput {
      auto logits = p.logits(pass.perturb(data.x[t]));
      return {torch::nn::functional::cross_entropy(logits, data.y[t]), logits, {}};
    });
    run.params.push_back(p.values());
    run.reports.push_back(report);
  }
  return run;
}

void expect_trajectory(const Run& run, const std::vector<Params>& expected, double tol = kTol) {
  ASSERT_EQ(run.params.size(), expected.size());
  for (size_t t = 0; t < expected.size(); ++t) {
    for (size_t i = 0; i < expected[t].size(); ++i) {
      EXPECT_LE((run.params[t][i] - expected[t][i]).abs().max().item<double>(), tol) << "step " << t << " tensor " << i;
    }
  }
}

enum class Variant { kPrevious, kPretrained, kNoise };

// TRAM-θt-1 / θ0 / ε with an explicit copy of every parameter set.
std::vector<Params> tram_reference(Variant variant, const Data& data, Params w, double scale, double eta, double lr) {
  Params previous = w, pretrained = w;
  std::vector<Params> out;
  for (int t = 0; t < kSteps; ++t) {
    Tensor target;
    switch (variant) {
      case Variant::kPrevious: target = logits_at(previous, data.x[t]); break;
      case Variant::kPretrained: target = logits_at(pretrained, data.x[t]); break;
      case Variant::kNoise: target = logits_at(w, data.x[t] + data.noise[t]); break;
    }
    const double d = kl(target, logits_at(w, data.x[t])).item<double>();
    auto g = grad_of(w, [&](const Params& v) { return data.ce(v, t); });
    auto e = asam_e(w, g, scale * d, eta);
    auto g2 = grad_of(add(w, e), [&](const Params& v) { return data.ce(v, t); });
    previous = w;
    w = add(w, g2, -lr);
    out.push_back(detached(w));
  }
  return out;
}

TEST(TRAM, PreviousMatchesAReferenceWithAnExplicitCopyOfThetaTMinus1) {
  Data data;
  tram::test::Problem p;
  auto expected = tram_reference(Variant::kPrevious, data, p.values(), 20.0, 0.01, 0.5);
  auto run = run_optimizer("tram-prev", "scale=20", data, p);
  expect_trajectory(run, expected);
  EXPECT_EQ(run.reports[0].distance, 0.0);  // θt-1 = θ0 at the first step
  EXPECT_GT(run.reports[2].distance, 0.0);
  EXPECT_DOUBLE_EQ(run.reports[2].radius[0], 20.0 * run.reports[2].distance);
}

TEST(TRAM, PretrainedMatchesReference) {
  Data data;
  tram::test::Problem p;
  auto expected = tram_reference(Variant::kPretrained, data, p.values(), 20.0, 0.05, 0.5);
  expect_trajectory(run_optimizer("tram-pre", "scale=20,eta=0.05", data, p), expected);
}

TEST(TRAM, NoiseMatchesReference) {
  Data data;
  tram::test::Problem p;
  auto expected = tram_reference(Variant::kNoise, data, p.values(), 5.0, 0.01, 0.5);
  auto run = run_optimizer("tram-noise", "scale=5", data, p);
  expect_trajectory(run, expected);
  EXPECT_GT(run.reports[0].distance, 0.0);
}

TEST(TRAM, FirstStepsOfPreviousAndPretrainedAgreeAndEqualThePlainStep) {
  Data data;
  tram::test::Problem a, b, c;
  auto prev = run_optimizer("tram-prev", "scale=20", data, a);
  auto pre = run_optimizer("tram-pre", "scale=20", data, b);
  auto sgd = run_optimizer("sgd", "", data, c);
  // d = 0 at the first step: no ascent, so both are exactly the SGD step.
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(torch::equal(prev.params[0][i], pre.params[0][i]));
    EXPECT_TRUE(torch::equal(prev.params[0][i], sgd.params[0][i]));
  }
  // From the second step on θt-1 != θ0 and the trajectories part.
  EXPECT_FALSE(torch::equal(prev.params[2][0], pre.params[2][0]));
}

TEST(TRAM, RadiusIsClampedByMaxRadius) {
  Data data;
  tram::test::Problem p;
  auto run = run_optimizer("tram-noise", "scale=1000,max_radius=0.01", data, p);
  for (const auto& report : run.reports) {
    EXPECT_GT(1000 * report.distance, 0.01);
    EXPECT_EQ(report.radius[0], 0.01);
  }
}

TEST(TRAM, ReleasedAscentIgnoresTheGradientDirection) {
  // formula=released reproduces the released code: e = r |w|^2 / ||w g|| (eta 0).
  Data data;
  tram::test::Problem p;
  Params w = p.values();
  const double d = kl(logits_at(w, data.x[0] + data.noise[0]), logits_at(w, data.x[0])).item<double>();
  auto g = grad_of(w, [&](const Params& v) { return data.ce(v, 0); });
  double sq = 0;
  for (size_t i = 0; i < 2; ++i) sq += (w[i].abs() * g[i]).pow(2).sum().item<double>();
  Params e;
  for (size_t i = 0; i < 2; ++i) e.push_back(5.0 * d * w[i].pow(2) / (std::sqrt(sq) + 1e-12));
  auto g2 = grad_of(add(w, e), [&](const Params& v) { return data.ce(v, 0); });
  auto expected = add(w, g2, -0.5);
  auto run = run_optimizer("tram-noise", "scale=5,eta=0,formula=released", data, p);
  for (size_t i = 0; i < 2; ++i) EXPECT_LE((run.params[0][i] - expected[i]).abs().max().item<double>(), kTol);
}

TEST(TRAM, NonAdaptiveAscentPaperAndReleased) {
  // adaptive=false: T = 1. The paper's formula is then SAM's direction with
  // the trust-region radius, e = r g / (||g|| + eps); the released code's
  // non-adaptive branch moves every element by r / (||g|| + eps).
  for (const bool released : {false, true}) {
    SCOPED_TRACE(released ? "released" : "paper");
    Data data;
    tram::test::Problem p;
    Params w = p.values();
    const double d = kl(logits_at(w, data.x[0] + data.noise[0]), logits_at(w, data.x[0])).item<double>();
    auto g = grad_of(w, [&](const Params& v) { return data.ce(v, 0); });
    double sq = 0;
    for (size_t i = 0; i < 2; ++i) sq += g[i].pow(2).sum().item<double>();
    Params e;
    for (size_t i = 0; i < 2; ++i) {
      const Tensor direction = released ? torch::ones_like(w[i]) : g[i];
      e.push_back(5.0 * d * direction / (std::sqrt(sq) + 1e-12));
    }
    auto g2 = grad_of(add(w, e), [&](const Params& v) { return data.ce(v, 0); });
    auto expected = add(w, g2, -0.5);
    auto run = run_optimizer("tram-noise", released ? "scale=5,adaptive=false,formula=released"
                                                    : "scale=5,adaptive=false", data, p);
    for (size_t i = 0; i < 2; ++i) EXPECT_LE((run.params[0][i] - expected[i]).abs().max().item<double>(), kTol);
    EXPECT_NEAR(run.reports[0].ascent_norm, std::sqrt(sq), 1e-12);
  }
}

TEST(TRAM, FisherFixedAndTrustRegionRadius) {
  for (bool trust_region : {false, true}) {
    Data data;
    tram::test::Problem p;
    Params w = p.values();
    std::vector<Params> expected;
    for (int t = 0; t < kSteps; ++t) {
      auto gz = grad_of(w, [&](const Params& v) { return data.ce(v, t, /*noisy=*/true); });
      double r = 0.1;
      if (trust_region) r = 3.0 * kl(logits_at(w, data.x[t] + data.noise[t]), logits_at(w, data.x[t])).item<double>();
      auto e = fisher_e(gz, r, 0.2);
      auto g2 = grad_of(add(w, e), [&](const Params& v) { return data.ce(v, t); });
      w = add(w, g2, -0.5);
      expected.push_back(detached(w));
    }
    auto run = run_optimizer("tram-fisher",
                             trust_region ? "fisher_eta=0.2,radius=trust_region,scale=3" : "fisher_eta=0.2", data, p);
    expect_trajectory(run, expected);
    EXPECT_EQ(run.reports[0].passes, trust_region ? 3 : 2);  // 2 forward + 2 backward, + the clean target
  }
}

// Loss of the regularized methods, docs/ALGORITHMS.md §7, written from the definitions.
Tensor trpo_loss(const Data& data, int t, const Params& w, const Params& previous, double lambda) {
  return data.ce(w, t) + lambda * kl(logits_at(previous, data.x[t]).detach(), logits_at(w, data.x[t]));
}

TEST(Regularizers, TrpoMatchesReference) {
  Data data;
  tram::test::Problem p;
  Params w = p.values(), previous = w;
  std::vector<Params> expected;
  for (int t = 0; t < kSteps; ++t) {
    auto g = grad_of(w, [&](const Params& v) { return trpo_loss(data, t, v, previous, 0.7); });
    previous = w;
    w = add(w, g, -0.5);
    expected.push_back(detached(w));
  }
  auto run = run_optimizer("trpo", "lambda=0.7", data, p);
  expect_trajectory(run, expected);
  EXPECT_GT(run.reports[2].regularizer, 0.0);
}

TEST(Regularizers, R3fMatchesReference) {
  Data data;
  tram::test::Problem p;
  Params w = p.values();
  std::vector<Params> expected;
  for (int t = 0; t < kSteps; ++t) {
    auto g = grad_of(w, [&](const Params& v) {
      auto clean = logits_at(v, data.x[t]), noisy = logits_at(v, data.x[t] + data.noise[t]);
      return data.ce(v, t) + 0.4 * (kl(clean, noisy) + kl(noisy, clean));  // both sides with gradient
    });
    w = add(w, g, -0.5);
    expected.push_back(detached(w));
  }
  expect_trajectory(run_optimizer("r3f", "lambda=0.4", data, p), expected);
}

TEST(Regularizers, MesaMatchesReference) {
  Data data;
  tram::test::Problem p;
  Params w = p.values(), ema = w;
  const double decay = 0.9, tau = 2.0, lambda = 0.5;
  std::vector<Params> expected;
  for (int t = 0; t < kSteps; ++t) {
    auto g = grad_of(w, [&](const Params& v) {
      return data.ce(v, t) +
             lambda * tau * tau * kl(logits_at(ema, data.x[t]).detach() / tau, logits_at(v, data.x[t]) / tau);
    });
    w = add(w, g, -0.5);
    for (size_t i = 0; i < 2; ++i) ema[i] = decay * ema[i] + (1 - decay) * w[i];
    expected.push_back(detached(w));
  }
  // From the second step the teacher differs from the student.
  expect_trajectory(run_optimizer("mesa", "lambda=0.5,ema_decay=0.9,temperature=2", data, p), expected);
}

TEST(Regularizers, AsamPlusTrpoRegularizesBothPasses) {
  Data data;
  tram::test::Problem p;
  Params w = p.values(), previous = w;
  std::vector<Params> expected;
  for (int t = 0; t < kSteps; ++t) {
    auto loss = [&](const Params& v) { return trpo_loss(data, t, v, previous, 0.7); };
    auto g = grad_of(w, loss);
    auto e = asam_e(w, g, 0.5, 0.01);
    auto g2 = grad_of(add(w, e), loss);
    previous = w;
    w = add(w, g2, -0.5);
    expected.push_back(detached(w));
  }
  expect_trajectory(run_optimizer("asam+trpo", "lambda=0.7", data, p), expected);
}

TEST(Passes, NoiseNeverLeaksIntoCleanOrDescentPasses) {
  for (const std::string method : {"tram-noise", "tram-fisher", "r3f", "sam+r3f", "tram-prev"}) {
    tram::test::Problem p;
    auto opt = tram::make_optimizer(method, p.params(), tram::parse_options("lr=0.1"));
    std::map<tram::PassKind, int> noisy_calls, calls;
    opt->step([&](const tram::Pass& pass) -> tram::PassOutput {
      auto perturbed = pass.perturb(p.x);
      const bool changed = !perturbed.is_same(p.x);
      ++calls[pass.kind()];
      if (changed) ++noisy_calls[pass.kind()];
      EXPECT_EQ(changed, pass.noisy()) << method;
      if (pass.kind() == tram::PassKind::kClean || pass.kind() == tram::PassKind::kPerturbed) {
        EXPECT_FALSE(changed) << method << " added noise to the " << tram::to_string(pass.kind()) << " pass";
      }
      auto logits = p.logits(perturbed);
      return {torch::nn::functional::cross_entropy(logits, p.y), logits, {}};
    });
    const bool has_ascent = method != "r3f";
    EXPECT_EQ(calls[tram::PassKind::kPerturbed], has_ascent ? 1 : 0) << method;
    EXPECT_EQ(noisy_calls[tram::PassKind::kClean] + noisy_calls[tram::PassKind::kPerturbed], 0) << method;
  }
}

// A model with dropout and BatchNorm, for the mode and running-statistics contracts.
struct Net : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
  torch::nn::Dropout dropout{nullptr};
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 6));
    norm = register_module("norm", torch::nn::BatchNorm1d(6));
    dropout = register_module("dropout", torch::nn::Dropout(0.5));
    fc2 = register_module("fc2", torch::nn::Linear(6, 3));
  }
  Tensor forward(const Tensor& x) { return fc2(dropout(torch::tanh(norm(fc1(x))))); }
};

TEST(Passes, TargetPassesRunInEvalModeAndOnlyPassOneUpdatesBatchNorm) {
  for (const std::string method : {"tram-prev", "tram-pre", "tram-noise", "trpo", "mesa", "sam+r3f", "tram-fisher"}) {
    torch::manual_seed(3);
    auto net = std::make_shared<Net>();
    net->train();
    auto x = torch::randn({16, 4});
    auto y = torch::randint(0, 3, {16});
    auto opt = tram::make_optimizer(method, net->parameters(), tram::parse_options("lr=0.1"));
    opt->set_module(net);
    Tensor mean_after_pass_1;
    int targets = 0;
    for (int step = 0; step < 2; ++step) {
      opt->step([&](const tram::Pass& pass) -> tram::PassOutput {
        const bool target = pass.kind() == tram::PassKind::kTarget;
        EXPECT_EQ(net->is_training(), !target) << method << " " << tram::to_string(pass.kind());
        EXPECT_EQ(net->dropout->is_training(), !target) << method;
        targets += target;
        auto logits = net->forward(pass.perturb(x));
        const bool first = pass.kind() == tram::PassKind::kClean ||
                           (method == "tram-fisher" && pass.kind() == tram::PassKind::kNoisy);
        if (first) mean_after_pass_1 = net->norm->running_mean.clone();
        return {torch::nn::functional::cross_entropy(logits, y), logits, {}};
      });
      EXPECT_TRUE(net->is_training());
      EXPECT_TRUE(torch::equal(net->norm->running_mean, mean_after_pass_1)) << method;
    }
    const bool has_target = method != "sam+r3f" && method != "tram-fisher";
    EXPECT_EQ(targets > 0, has_target) << method;
  }
}

TEST(Contracts, ThrowingTargetPassLeavesBothParameterSetsIntact) {
  Data data;
  tram::test::Problem p;
  auto opt = tram::make_optimizer("tram-prev", p.params(), tram::parse_options("lr=0.5,scale=20"));
  auto forward = [&](const tram::Pass& pass) -> tram::PassOutput {
    auto logits = p.logits(pass.perturb(data.x[0]));
    return {torch::nn::functional::cross_entropy(logits, data.y[0]), logits, {}};
  };
  opt->step(forward);
  opt->step(forward);
  auto before = p.values();
  bool thrown = false;
  EXPECT_THROW(opt->step([&](const tram::Pass& pass) -> tram::PassOutput {
    if (pass.kind() == tram::PassKind::kTarget) {
      thrown = true;
      throw std::runtime_error("target pass failed");
    }
    return forward(pass);
  }),
               std::runtime_error);
  EXPECT_TRUE(thrown);
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(p.params()[i], before[i]));
  // θt-1 survived too: the next step is the one an uninterrupted run takes.
  tram::test::Problem q;
  auto reference = tram::make_optimizer("tram-prev", q.params(), tram::parse_options("lr=0.5,scale=20"));
  auto forward_q = [&](const tram::Pass& pass) -> tram::PassOutput {
    auto logits = q.logits(pass.perturb(data.x[0]));
    return {torch::nn::functional::cross_entropy(logits, data.y[0]), logits, {}};
  };
  for (int i = 0; i < 3; ++i) reference->step(forward_q);
  opt->step(forward);
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(p.params()[i], q.params()[i]));
}

TEST(Serialization, TramPreviousResumesBitIdentically) {
  Data data;
  for (const std::string method : {"tram-prev", "tram-pre", "mesa", "asam+trpo"}) {
    const auto options = tram::parse_options("base=adam,lr=0.01,scale=20");
    auto forward_for = [&](tram::test::Problem& p, int t) {
      return [&p, &data, t](const tram::Pass& pass) -> tram::PassOutput {
        auto logits = p.logits(pass.perturb(data.x[t]));
        return {torch::nn::functional::cross_entropy(logits, data.y[t]), logits, {}};
      };
    };
    auto method_options = options;
    if (method == "mesa" || method == "asam+trpo") method_options.erase("scale");
    tram::test::Problem straight;
    auto opt = tram::make_optimizer(method, straight.params(), method_options);
    for (int t = 0; t < kSteps; ++t) opt->step(forward_for(straight, t));

    tram::test::Problem half;
    auto opt1 = tram::make_optimizer(method, half.params(), method_options);
    for (int t = 0; t < 2; ++t) opt1->step(forward_for(half, t));
    std::stringstream buffer;
    torch::save(*opt1, buffer);
    tram::test::Problem resumed;  // same initial values: θ0 must come from the checkpoint anyway
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < 2; ++i) resumed.params()[i].copy_(half.params()[i]);
    }
    auto opt2 = tram::make_optimizer(method, resumed.params(), method_options);
    torch::load(*opt2, buffer);
    for (int t = 2; t < kSteps; ++t) opt2->step(forward_for(resumed, t));
    for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(straight.params()[i], resumed.params()[i])) << method;
  }
}

}  // namespace
