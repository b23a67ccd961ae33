// Host reads per step (tram::host_reads(), include/tram/host_reads.h): on a
// GPU each read of a value to the host is a synchronisation. An ascending
// step reads once: the ascent's gradient norm, with the trust-region
// distance and the loss scaler's flag where there are any; nothing it
// reports is read until the caller reads it.
#include <tram/tram.h>

#include "test_util.h"

#include <algorithm>
#include <limits>
#include <string>

namespace {

using tram::test::Problem;

// What a step of `method` must read: one read when it ascends (the
// coefficient r / ||T g|| is a host-side kernel argument, and so is the
// radius from d), read together; a gradient rule takes the radius before
// ||T g|| of what it shaped can be computed, so with a trust region as well
// d is a read of its own.
uint64_t expected_reads(const tram::SharpnessAware& optimizer) {
  const auto& method = optimizer.method();
  if (!method.ascends_at(optimizer.step_count())) return 0;
  return 1 + (method.trust_region() != nullptr && method.gradient_rule() != nullptr ? 1 : 0);
}

// The reads of one step(ForwardClosure) whose report is not read.
uint64_t reads_of_one_step(tram::SharpnessAware& optimizer, const Problem& problem) {
  const uint64_t before = tram::host_reads();
  optimizer.step(problem.forward_closure());
  return tram::host_reads() - before;
}

TEST(HostReads, EveryMethodReadsOnlyWhatItsAscentNeeds) {
  for (const auto& name : tram::method_names()) {
    for (const std::string& tail : {std::string(), std::string("+trpo"), std::string("+r3f")}) {
      const bool composable = tail.empty() || name.rfind("tram-", 0) == 0 || name == "sam" || name == "asam";
      if (!composable || (!tail.empty() && (name == "trpo" || name == "r3f" || name == "mesa"))) continue;
      const std::string method = name + tail;
      SCOPED_TRACE(method);
      Problem problem;
      const bool base = name == "sgd" || name == "adam" || name == "adamw";
      auto optimizer =
          tram::make_optimizer(method, problem.params(), tram::parse_options(base ? "lr=0.01" : "base=adam,lr=0.01"));
      // Steps 0..5: LookSAM and intervals ascend only on some of them.
      for (int step = 0; step < 6; ++step) {
        const uint64_t expected = expected_reads(*optimizer);
        EXPECT_EQ(reads_of_one_step(*optimizer, problem), expected) << "step " << step;
      }
    }
  }
}

TEST(HostReads, ATrustRegionWithAGradientRuleReadsTheDistanceFirst) {
  // No method of the catalogue has both; a composed one reads d before the
  // rule shapes the ascent, then ||T g||, and still reaches the same radius.
  Problem problem;
  const auto options = tram::parse_options("base=adam,lr=0.01");
  auto [config, defaults] = tram::method_config("tram-prev", options);
  config.gradient_rule(tram::method_config("vasso", options).first.gradient_rule());
  auto base = std::make_shared<torch::optim::Adam>(problem.params(), torch::optim::AdamOptions(0.01));
  tram::SharpnessAware composed(base, config, defaults);
  for (int step = 0; step < 3; ++step) {
    EXPECT_EQ(reads_of_one_step(composed, problem), 2u) << "step " << step;
    const tram::StepReport report = composed.last_step();
    ASSERT_EQ(report.radius.size(), 1u);
    const auto* region = config.trust_region();
    double expected = std::max(0.0, region->scale * report.distance);
    if (region->max_radius) expected = std::min(expected, *region->max_radius);
    EXPECT_EQ(report.radius[0], expected);
    if (step > 0) EXPECT_GT(report.distance, 0.0);  // w has moved from θt-1
  }
}

TEST(HostReads, TheOtherStepFormsReadOnce) {
  // step(LossClosure): the norm alone.
  Problem problem;
  auto sam = tram::make_optimizer("sam", problem.params(), tram::parse_options("base=adam,lr=0.01"));
  for (int step = 0; step < 2; ++step) {
    const uint64_t before = tram::host_reads();
    sam->step(problem.loss_closure(*sam));
    EXPECT_EQ(tram::host_reads() - before, 1u) << "step " << step;
  }
  // The two-call API with the caller's d: d is not read, the norm is.
  Problem other;
  auto noise = tram::make_optimizer("tram-noise", other.params(), tram::parse_options("base=adam,lr=0.01"));
  for (int step = 0; step < 2; ++step) {
    const uint64_t before = tram::host_reads();
    noise->zero_grad();
    other.loss().backward();
    noise->first_step(0.05);
    noise->zero_grad();
    other.loss().backward();
    noise->second_step();
    EXPECT_EQ(tram::host_reads() - before, 1u) << "step " << step;
    EXPECT_EQ(noise->last_step().distance, 0.05);
  }
}

TEST(HostReads, MicroBatchesAndClippingAddNoRead) {
  for (const std::string method : {"sam", "tram-prev", "tram-noise", "tram-pre+mesa"}) {
    SCOPED_TRACE(method);
    Problem problem(7, /*rows=*/16);
    auto optimizer = tram::make_optimizer(method, problem.params(), tram::parse_options("base=adam,lr=0.01"));
    optimizer->set_gradient_accumulation(4);
    optimizer->set_max_grad_norm(0.5);
    for (int step = 0; step < 3; ++step) {
      EXPECT_EQ(reads_of_one_step(*optimizer, problem), expected_reads(*optimizer)) << "step " << step;
    }
  }
}

TEST(HostReads, AReportValueIsReadOnceWhenFirstUsedAndCopiesShareIt) {
  Problem problem;
  auto optimizer = tram::make_optimizer("tram-prev", problem.params(), tram::parse_options("base=adam,lr=0.01"));
  optimizer->step(problem.forward_closure());
  const tram::StepReport report = optimizer->step(problem.forward_closure());
  EXPECT_TRUE(report.loss.pending());
  EXPECT_TRUE(report.perturbed_loss.pending());

  const uint64_t before = tram::host_reads();
  const double loss = report.loss;
  EXPECT_EQ(tram::host_reads() - before, 1u);
  EXPECT_FALSE(report.loss.pending());
  // The copy kept as last_step() shares the read value.
  EXPECT_FALSE(optimizer->last_step().loss.pending());
  EXPECT_EQ(optimizer->last_step().loss.value(), loss);
  EXPECT_EQ(report.loss.value(), loss);
  EXPECT_EQ(tram::host_reads() - before, 1u);

  // sharpness was formed on the device: reading it is one more read, and it
  // equals the difference of the two losses it came from.
  const double sharpness = report.sharpness;
  EXPECT_EQ(tram::host_reads() - before, 2u);
  EXPECT_NEAR(sharpness, report.perturbed_loss - report.loss, 1e-15);
  EXPECT_GT(static_cast<double>(report.perturbation_norm), 0.0);

  // The values are those of the step: the loss at the parameters before it.
  Problem same;
  auto replay = tram::make_optimizer("tram-prev", same.params(), tram::parse_options("base=adam,lr=0.01"));
  replay->step(same.forward_closure());
  const double expected = same.loss().item<double>();
  EXPECT_EQ(loss, expected);
}

TEST(HostReads, PlainNumbersConvertWithoutAnyRead) {
  const uint64_t before = tram::host_reads();
  tram::ReportValue value = 0.25;
  EXPECT_FALSE(value.pending());
  EXPECT_EQ(value + 1.0, 1.25);
  EXPECT_EQ(tram::host_reads(), before);
}

TEST(HostReads, AGradScalerAddsTheDescentsFlag) {
  // The ascent's inf/NaN flag is read with the norm (and d); the descent's
  // decides on the host whether the base step runs: one read more.
  for (const std::string method : {"sam", "tram-prev", "tram-fisher"}) {
    SCOPED_TRACE(method);
    Problem problem;
    auto optimizer = tram::make_optimizer(method, problem.params(), tram::parse_options("base=adam,lr=0.01"));
    optimizer->set_grad_scaler(std::make_shared<tram::GradScaler>());
    for (int step = 0; step < 2; ++step) {
      EXPECT_EQ(reads_of_one_step(*optimizer, problem), 2u) << "step " << step;
      EXPECT_FALSE(optimizer->last_step().step_skipped);
    }
  }
  // A gradient rule updates its state from the ascent's gradient: the flag
  // is read before it, the norm of what it shaped after it.
  Problem problem;
  auto vasso = tram::make_optimizer("vasso", problem.params(), tram::parse_options("base=adam,lr=0.01"));
  vasso->set_grad_scaler(std::make_shared<tram::GradScaler>());
  EXPECT_EQ(reads_of_one_step(*vasso, problem), 3u);
}

TEST(HostReads, AnOverflowInPassOneSkipsTheStepFromTheSameRead) {
  // The flag read with d and the norm still skips the step, before anything moves.
  Problem problem;
  auto optimizer = tram::make_optimizer("tram-prev", problem.params(), tram::parse_options("base=adam,lr=0.01"));
  optimizer->set_grad_scaler(std::make_shared<tram::GradScaler>());
  optimizer->step(problem.forward_closure());
  const auto before_values = problem.values();
  const tram::ForwardClosure overflowing = [&](const tram::Pass& pass) {
    tram::PassOutput out = problem.forward(pass);
    if (pass.kind() == tram::PassKind::kClean) out.loss = out.loss * std::numeric_limits<double>::infinity();
    return out;
  };
  const uint64_t before = tram::host_reads();
  const tram::StepReport report = optimizer->step(overflowing);
  EXPECT_EQ(tram::host_reads() - before, 1u);
  EXPECT_TRUE(report.step_skipped);
  EXPECT_TRUE(torch::equal(problem.weight, before_values[0]));
  EXPECT_TRUE(torch::equal(problem.bias, before_values[1]));
}

}  // namespace
