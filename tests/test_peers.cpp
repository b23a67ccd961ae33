// The peers' SAM variants (docs/ALGORITHMS.md §16): GSAM, LookSAM, ESAM,
// FriendlySAM, VaSSO and WSAM, each against its formula computed here with
// plain tensor ops in float64, at the limits where it must be SAM bit for bit,
// across a checkpoint, and with its options checked.
#include <tram/tram.h>

#include "test_util.h"

#include <cmath>
#include <sstream>

namespace {

using torch::Tensor;
using tram::test::error_of;
using tram::test::Problem;

using Params = std::vector<Tensor>;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

Params axpy(const Params& x, double a, const Params& y) {  // x + a y
  Params out;
  for (size_t i = 0; i < x.size(); ++i) out.push_back(x[i] + a * y[i]);
  return out;
}
double dot(const Params& a, const Params& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += (a[i] * b[i]).sum().item<double>();
  return sum;
}
double norm(const Params& a) { return std::sqrt(dot(a, a)); }
Params scaled(double a, const Params& x) {
  Params out;
  for (const auto& t : x) out.push_back(a * t);
  return out;
}

// SAM's perturbed point along v: w + rho v / (||v|| + eps).
Params ascended(const Params& w, const Params& v, double rho) { return axpy(w, rho / (norm(v) + 1e-12), v); }

void expect_close(const Params& actual, const Params& expected, const std::string& what) {
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_TRUE(torch::allclose(actual[i], expected[i], 1e-12, 1e-13))
        << what << ", tensor " << i << ": " << (actual[i] - expected[i]).abs().max().item<double>();
  }
}

// A forward closure that returns per-row losses and honours Pass::select.
tram::ForwardClosure rows_closure(const Problem& p) {
  return [&p](const tram::Pass& pass) {
    namespace F = torch::nn::functional;
    const Tensor x = pass.select(p.x), y = pass.select(p.y);
    const Tensor logits = p.logits(pass.perturb(x));
    const Tensor rows = F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().reduction(torch::kNone));
    return tram::PassOutput{rows.mean(), logits, {}, rows.detach()};
  };
}

std::unique_ptr<tram::SharpnessAware> make(const std::string& method, Problem& p, const std::string& options) {
  return tram::make_optimizer(method, p.params(), tram::parse_options("lr=0.1," + options));
}

// --- one step against the formula (SGD, lr 0.1) ----------------------------

TEST(GSAM, DescendsAlongThePerturbedGradientMinusAlphaTimesItsOrthogonalPart) {
  Problem p;
  const Params w = p.values(), g = p.grad(w);
  const Params g_p = p.grad(ascended(w, g, 0.05));
  const Params unit = scaled(1.0 / (norm(g_p) + 1e-12), g_p);
  const Params g_perp = axpy(g, -dot(g, unit), unit);
  const Params descent = axpy(g_p, -0.4, g_perp);
  auto opt = make("gsam", p, "");
  opt->step(p.forward_closure());
  expect_close(p.values(), axpy(w, -0.1, descent), "GSAM");
}

TEST(WSAM, CoupledDescendsAlongAWeightedSumAndDecoupledCorrectsAfterTheBase) {
  const double gamma = 0.8, a = gamma / (1 - gamma);
  for (bool decouple : {false, true}) {
    Problem p;
    const Params w = p.values(), g = p.grad(w), g_p = p.grad(ascended(w, g, 0.05));
    // Adam would tell the two forms apart; SGD with momentum 0.9 does too, and
    // its first step is w - lr * gradient.
    auto opt = make("wsam", p, "momentum=0.9,gamma=0.8,decouple=" + std::string(decouple ? "true" : "false"));
    opt->step(p.forward_closure());
    const Params expected = decouple ? axpy(axpy(w, -0.1, g), -0.1 * a, axpy(g_p, -1.0, g))
                                     : axpy(w, -0.1, axpy(scaled(a, g_p), 1 - a, g));
    expect_close(p.values(), expected, decouple ? "WSAM decoupled" : "WSAM coupled");
    // Step 1 tells them apart through the momentum: decoupled, the buffer holds g only.
    const Params w1 = p.values(), g1 = p.grad(w1), g1_p = p.grad(ascended(w1, g1, 0.05));
    const Params buffer = decouple ? g : axpy(scaled(a, g_p), 1 - a, g);
    opt->step(p.forward_closure());
    const Params descent1 = decouple ? axpy(scaled(0.9, buffer), 1, g1) : axpy(scaled(0.9, buffer), 1, axpy(scaled(a, g1_p), 1 - a, g1));
    const Params expected1 = decouple ? axpy(axpy(w1, -0.1, descent1), -0.1 * a, axpy(g1_p, -1.0, g1))
                                      : axpy(w1, -0.1, descent1);
    expect_close(p.values(), expected1, decouple ? "WSAM decoupled, step 1" : "WSAM coupled, step 1");
  }
}

TEST(FriendlySAM, AscendsAlongTheGradientMinusSigmaTimesItsAverage) {
  Problem p;
  auto opt = make("friendly-sam", p, "sigma=0.7,friendly_lambda=0.6");
  // Step 0: the ascent follows g, and m = g.
  Params w = p.values(), g = p.grad(w);
  Params m = g;
  opt->step(p.forward_closure());
  expect_close(p.values(), axpy(w, -0.1, p.grad(ascended(w, g, 0.05))), "FriendlySAM step 0");
  // Step 1: along g - sigma m; then m = lambda m + (1 - lambda) g.
  w = p.values();
  g = p.grad(w);
  const Params v = axpy(g, -0.7, m);
  opt->step(p.forward_closure());
  expect_close(p.values(), axpy(w, -0.1, p.grad(ascended(w, v, 0.05))), "FriendlySAM step 1");
  m = axpy(scaled(0.6, m), 0.4, g);
  // Step 2 uses the updated average.
  w = p.values();
  g = p.grad(w);
  opt->step(p.forward_closure());
  expect_close(p.values(), axpy(w, -0.1, p.grad(ascended(w, axpy(g, -0.7, m), 0.05))), "FriendlySAM step 2");
}

TEST(VaSSO, AscendsAlongAnExponentialAverageOfTheGradients) {
  Problem p;
  auto opt = make("vasso", p, "theta=0.3");
  Params w = p.values(), g = p.grad(w);
  Params d = g;
  opt->step(p.forward_closure());
  expect_close(p.values(), axpy(w, -0.1, p.grad(ascended(w, d, 0.05))), "VaSSO step 0");
  for (int t = 1; t < 3; ++t) {
    w = p.values();
    g = p.grad(w);
    d = axpy(scaled(0.7, d), 0.3, g);
    opt->step(p.forward_closure());
    expect_close(p.values(), axpy(w, -0.1, p.grad(ascended(w, d, 0.05))), "VaSSO step " + std::to_string(t));
  }
}

TEST(LookSAM, TakesTheSamStepEveryKthStepAndReusesItsOrthogonalComponentBetween) {
  Problem p;
  auto opt = make("looksam", p, "k=3,alpha=0.5");
  Params g_v;
  for (int t = 0; t < 7; ++t) {
    const Params w = p.values(), g = p.grad(w);
    const auto report = opt->step(p.forward_closure());
    if (t % 3 == 0) {
      const Params g_p = p.grad(ascended(w, g, 0.05));
      g_v = axpy(g_p, -dot(g, g_p) / (dot(g, g) + 1e-12), g);
      EXPECT_EQ(report.passes, 2) << "step " << t;
      expect_close(p.values(), axpy(w, -0.1, g_p), "LookSAM step " + std::to_string(t));
    } else {
      EXPECT_EQ(report.passes, 1) << "step " << t;
      const Params descent = axpy(g, 0.5 * norm(g) / (norm(g_v) + 1e-12), g_v);
      expect_close(p.values(), axpy(w, -0.1, descent), "LookSAM step " + std::to_string(t));
    }
  }
}

TEST(ESAM, PerturbsTheTensorsItsHashSelectsWithRadiusRhoOverBeta) {
  // Over steps, some tensors are left out: compare each step with the formula
  // over the selected set S (no per-row losses here: SWP only).
  Problem p;
  auto opt = make("esam", p, "beta=0.5,seed=11");
  int partial_steps = 0;
  for (int t = 0; t < 8; ++t) {
    const Params w = p.values(), g = p.grad(w);
    Params g_s;
    for (size_t i = 0; i < g.size(); ++i) {
      g_s.push_back(tram::policy::esam_uniform(11, t, i) < 0.5 ? g[i] : torch::zeros_like(g[i]));
    }
    if (norm(g_s) == 0 || norm(g_s) != norm(g)) ++partial_steps;
    const auto report = opt->step(p.forward_closure());
    EXPECT_EQ(report.passes, 2);
    EXPECT_DOUBLE_EQ(report.radius.at(0), 0.05 / 0.5);
    expect_close(p.values(), axpy(w, -0.1, p.grad(ascended(w, g_s, 0.1))), "ESAM step " + std::to_string(t));
  }
  EXPECT_GT(partial_steps, 0) << "the hash selected every tensor on every step; the test would not see SWP";
}

TEST(ESAM, SelectsTheRowsWhoseLossTheAscentRaisedMostForPassTwo) {
  Problem p(/*seed=*/5, /*rows=*/7);
  auto opt = make("esam", p, "beta=1,gamma=0.4");
  const Params w = p.values(), g = p.grad(w);
  const Params w_e = ascended(w, g, 0.05);
  // Per-row loss rise, the ceil(0.4 * 7) = 3 largest rows, pass 2 on them.
  namespace F = torch::nn::functional;
  auto rows_at = [&](const Params& at) {
    return F::cross_entropy(torch::addmm(at[1], p.x, at[0].t()), p.y, F::CrossEntropyFuncOptions().reduction(torch::kNone));
  };
  const Tensor rise = rows_at(w_e) - rows_at(w);
  const Tensor kept = std::get<0>(std::get<1>(rise.sort(true, 0, true)).slice(0, 0, 3).sort());
  std::vector<Tensor> leaves;
  for (const auto& t : w_e) leaves.push_back(t.clone().requires_grad_(true));
  const Tensor loss = Problem::loss_at(leaves, p.x.index_select(0, kept), p.y.index_select(0, kept));
  const auto g_p = torch::autograd::grad({loss}, leaves);
  const auto report = opt->step(rows_closure(p));
  EXPECT_EQ(report.passes, 3);  // pass 1, the selection pass, pass 2 on the kept rows
  EXPECT_NEAR(report.perturbed_loss, loss.item<double>(), 1e-14);
  expect_close(p.values(), axpy(w, -0.1, {g_p[0], g_p[1]}), "ESAM with SDS");
}

TEST(ESAM, WithoutPerRowLossesSaysOnceThatOnlySwpRuns) {
  Problem p;
  auto opt = make("esam", p, "");
  std::vector<std::string> warnings;
  struct Collect : c10::WarningHandler {
    std::vector<std::string>* out;
    void process(const c10::Warning& w) override { out->push_back(w.msg()); }
  } collect;
  collect.out = &warnings;
  c10::WarningUtils::WarningHandlerGuard collecting(&collect);
  for (int t = 0; t < 3; ++t) EXPECT_EQ(opt->step(p.forward_closure()).passes, 2);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(contains(warnings[0], "ESAM")) << warnings[0];
  EXPECT_TRUE(contains(warnings[0], "row_losses")) << warnings[0];
}

// --- the limits where each is SAM, bit for bit --------------------------------

std::vector<Params> run(const std::string& method, const std::string& options, bool rows, int steps = 5) {
  Problem p;
  auto opt = make(method, p, "base=adam," + options);
  std::vector<Params> out;
  for (int t = 0; t < steps; ++t) {
    opt->step(rows ? rows_closure(p) : p.forward_closure());
    out.push_back(p.values());
  }
  return out;
}

TEST(PeerLimits, EachIsSamBitForBitAtItsNeutralSetting) {
  const auto sam = run("sam", "", false);
  const std::vector<std::pair<std::string, std::string>> limits = {
      {"gsam", "alpha=0"},         {"wsam", "gamma=0.5,decouple=false"}, {"vasso", "theta=1"},
      {"friendly-sam", "sigma=0"}, {"looksam", "k=1"},                   {"esam", "beta=1,gamma=1"}};
  for (const auto& [method, options] : limits) {
    const auto other = run(method, options, /*rows=*/method == "esam");
    for (size_t t = 0; t < sam.size(); ++t) {
      for (size_t i = 0; i < sam[t].size(); ++i) {
        EXPECT_TRUE(torch::equal(other[t][i], sam[t][i])) << method << " " << options << ", step " << t;
      }
    }
  }
  // And away from it, each differs from SAM.
  for (const std::string method : {"gsam", "wsam", "vasso", "friendly-sam", "looksam", "esam"}) {
    EXPECT_FALSE(torch::equal(run(method, "", true).back()[0], sam.back()[0])) << method;
  }
}

// --- state across a checkpoint --------------------------------------------------

TEST(PeerCheckpoints, StatefulVariantsResumeBitIdentically) {
  for (const std::string method : {"looksam", "friendly-sam", "vasso", "esam", "gsam", "wsam"}) {
    const auto options = "base=adam,lr=0.05," + std::string(method == "looksam" ? "k=3" : "");
    Problem straight;
    auto a = make(method, straight, options);
    for (int i = 0; i < 7; ++i) a->step(rows_closure(straight));

    Problem resumed;
    auto b = make(method, resumed, options);
    for (int i = 0; i < 4; ++i) b->step(rows_closure(resumed));
    std::stringstream buffer;
    torch::save(*b, buffer);
    Problem copy;
    {
      torch::NoGradGuard no_grad;
      copy.weight.copy_(resumed.weight);
      copy.bias.copy_(resumed.bias);
    }
    auto c = make(method, copy, options);
    torch::load(*c, buffer);
    for (int i = 0; i < 3; ++i) c->step(rows_closure(copy));
    EXPECT_TRUE(torch::equal(straight.weight, copy.weight)) << method;
    EXPECT_TRUE(torch::equal(straight.bias, copy.bias)) << method;
  }
}

TEST(PeerCheckpoints, AStateOfAnotherShapeIsRejectedWithoutChanges) {
  Problem small;
  auto a = make("vasso", small, "");
  a->step(small.forward_closure());
  std::stringstream buffer;
  torch::save(*a, buffer);
  // b has taken a step, so its own d is set; the rejected load must keep it.
  Problem other(/*seed=*/7, /*rows=*/8, /*in=*/5), twin(/*seed=*/7, /*rows=*/8, /*in=*/5);
  auto b = make("vasso", other, ""), c = make("vasso", twin, "");
  b->step(other.forward_closure());
  c->step(twin.forward_closure());
  const auto message = error_of([&] { torch::load(*b, buffer); });
  EXPECT_TRUE(contains(message, "shape")) << message;
  b->step(other.forward_closure());
  c->step(twin.forward_closure());
  EXPECT_TRUE(torch::equal(other.weight, twin.weight));
}

// --- the other step forms -------------------------------------------------------

TEST(PeerStepForms, LossClosureAndTwoCallsGiveTheForwardClosuresStep) {
  for (const std::string method : {"gsam", "wsam", "friendly-sam", "vasso"}) {
    Problem a, b, c;
    auto fa = make(method, a, "base=adam"), fb = make(method, b, "base=adam"), fc = make(method, c, "base=adam");
    for (int t = 0; t < 3; ++t) {
      fa->step(a.forward_closure());
      fb->step(b.loss_closure(*fb));
      fc->zero_grad();
      c.loss().backward();
      fc->first_step();
      fc->zero_grad();
      c.loss().backward();
      fc->second_step();
    }
    EXPECT_TRUE(torch::equal(a.weight, b.weight)) << method;
    EXPECT_TRUE(torch::equal(a.weight, c.weight)) << method;
  }
}

// --- options ---------------------------------------------------------------------

TEST(PeerOptions, OutOfRangeValuesNameTheMethodTheOptionAndTheRange) {
  const std::vector<std::tuple<std::string, std::string, std::string>> bad = {
      {"gsam", "alpha=-1", "GSAM: invalid alpha: -1"},
      {"looksam", "k=0", "LookSAM: invalid k: 0"},
      {"looksam", "alpha=nan", "LookSAM: invalid alpha"},
      {"esam", "beta=0", "ESAM: invalid beta: 0"},
      {"esam", "gamma=1.5", "ESAM: invalid gamma: 1.5"},
      {"esam", "seed=-2", "invalid seed: -2"},
      {"friendly-sam", "friendly_lambda=1", "FriendlySAM: invalid friendly_lambda: 1"},
      {"friendly-sam", "sigma=-0.5", "FriendlySAM: invalid sigma: -0.5"},
      {"vasso", "theta=0", "VaSSO: invalid theta: 0"},
      {"wsam", "gamma=1", "WSAM: invalid gamma: 1"},
      {"wsam", "decouple=maybe", "'decouple' must be true/false"},
      {"looksam", "interval=2", "unknown option 'interval'"},
  };
  for (const auto& [method, options, expected] : bad) {
    Problem p;
    const auto message = error_of([&] { make(method, p, options); });
    EXPECT_TRUE(contains(message, expected)) << method << " " << options << ": " << message;
  }
}

TEST(PeerOptions, CombinedWithARegularizerEachKeepsItsOwnKeys) {
  Problem p;
  auto opt = make("friendly-sam+trpo", p, "friendly_lambda=0.5,lambda=0.2");
  EXPECT_EQ(opt->method().name(), "FriendlySAM+TRPO");
  EXPECT_DOUBLE_EQ(opt->method().regularizer()->weight(), 0.2);
  // ESAM's data selection cuts the regularizer's target logits to the kept rows.
  Problem q;
  auto esam = make("esam+trpo", q, "beta=1,gamma=0.5");
  for (int t = 0; t < 3; ++t) EXPECT_EQ(esam->step(rows_closure(q)).passes, 4);  // + the θt-1 target pass
}

}  // namespace
