// Host reads per step (tram::host_reads(), include/tram/host_reads.h): on a
// GPU each read of a value to the host is a synchronisation. A step reads
// the ascent's gradient norm, and for the trust-region methods the distance;
// nothing it reports is read until the caller reads it.
#include <tram/tram.h>

#include "test_util.h"

#include <string>

namespace {

using tram::test::Problem;

// What a step of `method` must read: the gradient norm when it ascends (the
// coefficient r / ||T g|| is a host-side kernel argument) and the distance d
// when the radius comes from a trust region (the radius is host-side too).
uint64_t expected_reads(const tram::SharpnessAware& optimizer) {
  const auto& method = optimizer.method();
  if (!method.ascends_at(optimizer.step_count())) return 0;
  return 1 + (method.trust_region() != nullptr ? 1 : 0);
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

TEST(HostReads, AGradScalerAddsOneReadPerUnscale) {
  Problem problem;
  auto optimizer = tram::make_optimizer("sam", problem.params(), tram::parse_options("base=adam,lr=0.01"));
  optimizer->set_grad_scaler(std::make_shared<tram::GradScaler>());
  for (int step = 0; step < 2; ++step) {
    // The norm, and the inf/NaN flag of the ascent's and of the descent's unscale.
    EXPECT_EQ(reads_of_one_step(*optimizer, problem), 3u) << "step " << step;
  }
}

}  // namespace
