// Training at scale: gradient accumulation, clipping, loss scaling, and
// data-parallel training over c10d (Gloo on loopback).
#include <tram/tram.h>

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include "test_util.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <thread>

namespace {

using torch::Tensor;
using tram::test::Problem;

constexpr int kSteps = 3;

// A batch of 8 rows with fixed noise per step; micro-batch or rank i of n
// sees rows [i*8/n, (i+1)*8/n) of the batch and of the noise.
struct Sharded {
  Problem problem;
  std::vector<Tensor> noise;
  Sharded() {
    torch::manual_seed(21);
    for (int t = 0; t < kSteps; ++t) noise.push_back(0.3 * torch::randn({8, 4}, torch::kFloat64));
  }
  static Tensor rows(const Tensor& t, int64_t part, int64_t parts) {
    const int64_t size = t.size(0) / parts;
    return t.narrow(0, part * size, size);
  }
};

// Runs kSteps of `method`; `part` / `parts` select this rank's shard of
// every batch; accumulation splits it again into micro-batches.
std::vector<Tensor> run(const std::string& method, const std::string& options, Sharded& data, int64_t micro_batches,
                        int64_t part = 0, int64_t parts = 1, c10::intrusive_ptr<c10d::Backend> group = {}) {
  auto& p = data.problem;
  auto opt = tram::make_optimizer(method, p.params(), tram::parse_options("lr=0.5," + options));
  opt->set_gradient_accumulation(micro_batches);
  if (group) opt->set_process_group(group);
  int t = 0;
  auto shard = [&](const Tensor& full, const tram::Pass& pass) {
    return Sharded::rows(Sharded::rows(full, part, parts), pass.micro_batch(), pass.micro_batches());
  };
  opt->set_noise_sampler([&](const Tensor&, const tram::NoiseOptions&, const tram::Pass& pass) {
    return shard(data.noise[t], pass);
  });
  for (t = 0; t < kSteps; ++t) {
    opt->step([&](const tram::Pass& pass) -> tram::PassOutput {
      auto logits = p.logits(pass.perturb(shard(p.x, pass)));
      return {torch::nn::functional::cross_entropy(logits, shard(p.y, pass)), logits, {}};
    });
  }
  return p.values();
}

double max_diff(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, (a[i] - b[i]).abs().max().item<double>());
  return diff;
}

const std::vector<std::pair<std::string, std::string>> kMethods = {
    {"sam", ""},          {"asam", ""},  {"fsam", ""},         {"tram-prev", "scale=20"},
    {"tram-pre", "scale=20"}, {"tram-noise", "scale=5"}, {"tram-fisher", "radius=trust_region,scale=3"},
    {"trpo", "lambda=0.7"}, {"r3f", "lambda=0.4"}, {"mesa", "lambda=0.5,ema_decay=0.9"},
    {"asam+trpo", ""}, {"gsam", ""}, {"looksam", "k=2"}, {"esam", ""}, {"friendly-sam", ""},
    {"vasso", ""}, {"wsam", ""}};

TEST(Accumulation, MicroBatchesEqualOneStepOnTheConcatenatedBatch) {
  for (const auto& [method, options] : kMethods) {
    Sharded whole, split;
    const auto expected = run(method, options, whole, 1);
    const auto accumulated = run(method, options, split, 4);
    // Same arithmetic up to the order of the sums: float64 rounding only.
    EXPECT_LE(max_diff(expected, accumulated), 1e-13) << method;
    // The trajectory moved (the comparison is not between two no-ops).
    EXPECT_GT(max_diff(expected, Sharded().problem.values()), 1e-3) << method;
  }
}

TEST(Clipping, DescentGradientIsClippedAscentIsNot) {
  Problem p;
  auto w = p.values();
  auto g = p.grad(w);
  double norm = 0;
  for (auto& gi : g) norm += gi.pow(2).sum().item<double>();
  norm = std::sqrt(norm);
  std::vector<Tensor> shifted;
  for (size_t i = 0; i < 2; ++i) shifted.push_back(w[i] + 0.05 * g[i] / (norm + 1e-12));
  auto g2 = p.grad(shifted);
  double norm2 = 0;
  for (auto& gi : g2) norm2 += gi.pow(2).sum().item<double>();
  norm2 = std::sqrt(norm2);
  const double max_norm = 0.1 * norm2;
  // LibTorch's clip_grad_norm_: coefficient max_norm / (norm + 1e-6), at most 1.
  const double coef = std::min(1.0, max_norm / (norm2 + 1e-6));
  auto opt = tram::make_optimizer("sam", p.params(), tram::parse_options("lr=0.1"));
  opt->set_max_grad_norm(max_norm);
  opt->step(p.forward_closure());
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_LE((p.params()[i] - (w[i] - 0.1 * coef * g2[i])).abs().max().item<double>(), 1e-12);
  }
  EXPECT_THROW(opt->set_max_grad_norm(-1.0), c10::Error);
}

TEST(LossScaling, UnscaleDividesEveryDtypeAndFlagsAnyInfOrNaN) {
  tram::GradScaler scaler(tram::GradScalerOptions().init_scale(8));
  EXPECT_FALSE(scaler.unscale({}));
  // Odd sizes and three dtypes in one call: each is divided by the scale.
  std::vector<Tensor> grads = {torch::full({7}, 4.0), torch::full({3, 5}, 2.0, torch::kFloat64),
                               torch::full({1}, 16.0, torch::kBFloat16)};
  EXPECT_FALSE(scaler.unscale(grads));
  EXPECT_TRUE(torch::equal(grads[0], torch::full({7}, 0.5)));
  EXPECT_TRUE(torch::equal(grads[1], torch::full({3, 5}, 0.25, torch::kFloat64)));
  EXPECT_TRUE(torch::equal(grads[2], torch::full({1}, 2.0, torch::kBFloat16)));
  // One non-finite element anywhere, in any dtype, is found.
  for (const double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
    for (size_t which = 0; which < 3; ++which) {
      std::vector<Tensor> g = {torch::ones({7}), torch::ones({3, 5}, torch::kFloat64), torch::ones({1}, torch::kBFloat16)};
      g[which].view(-1)[g[which].numel() - 1] = bad;
      EXPECT_TRUE(scaler.unscale(g)) << "tensor " << which << " holding " << bad;
    }
  }
  // Disabled: no division, and the check still runs.
  tram::GradScaler off(tram::GradScalerOptions().enabled(false));
  std::vector<Tensor> g = {torch::full({2}, 3.0)};
  EXPECT_FALSE(off.unscale(g));
  EXPECT_TRUE(torch::equal(g[0], torch::full({2}, 3.0)));
  g[0][1] = std::nan("");
  EXPECT_TRUE(off.unscale(g));
}

TEST(LossScaling, PowerOfTwoScaleGivesTheUnscaledStepExactly) {
  for (const auto& [method, options] : std::vector<std::pair<std::string, std::string>>{
           {"sam", ""}, {"fsam", ""}, {"tram-noise", "scale=5"}, {"tram-fisher", "radius=trust_region,scale=5"}}) {
    Sharded a, b;
    const auto plain = run(method, options, a, 1);
    auto& p = b.problem;
    auto opt = tram::make_optimizer(method, p.params(), tram::parse_options("lr=0.5," + options));
    auto scaler = std::make_shared<tram::GradScaler>(tram::GradScalerOptions().init_scale(1024));
    opt->set_grad_scaler(scaler);
    int t = 0;
    opt->set_noise_sampler([&](const Tensor&, const tram::NoiseOptions&, const tram::Pass&) { return b.noise[t]; });
    for (t = 0; t < kSteps; ++t) opt->step(p.forward_closure());
    for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(plain[i], p.params()[i])) << method;
  }
}

TEST(LossScaling, InfInEitherPassSkipsTheWholeStepAndBacksOff) {
  for (auto bad : {tram::PassKind::kClean, tram::PassKind::kPerturbed}) {
    Problem p;
    const auto before = p.values();
    auto opt = tram::make_optimizer("tram-prev", p.params(), tram::parse_options("base=adam,lr=0.1,scale=20"));
    auto scaler = std::make_shared<tram::GradScaler>(tram::GradScalerOptions().init_scale(256).growth_interval(2));
    opt->set_grad_scaler(scaler);
    auto forward = [&](const tram::Pass& pass) {
      auto out = p.forward(pass);
      if (pass.kind() == bad) out.loss = out.loss * std::numeric_limits<double>::infinity();
      return out;
    };
    auto report = opt->step(forward);
    EXPECT_TRUE(report.step_skipped);
    EXPECT_EQ(opt->skipped_steps(), 1);
    EXPECT_EQ(scaler->scale(), 128.0);
    EXPECT_FALSE(opt->perturbed());
    for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(p.params()[i], before[i]));
    EXPECT_TRUE(opt->base().state().empty());  // Adam never stepped
    // Two good steps grow the scale back (growth_interval 2).
    opt->step(p.forward_closure());
    opt->step(p.forward_closure());
    EXPECT_EQ(scaler->scale(), 256.0);
    EXPECT_FALSE(torch::equal(p.params()[0], before[0]));
  }
}

TEST(LossScaling, TwoCallApiUnscalesBeforeTheAscent) {
  // FSAM is not scale-invariant: without unscaling the ascent would differ.
  Problem a, b;
  auto plain = tram::make_optimizer("fsam", a.params(), tram::parse_options("lr=0.1"));
  plain->step(a.loss_closure(*plain));
  auto scaled = tram::make_optimizer("fsam", b.params(), tram::parse_options("lr=0.1"));
  auto scaler = std::make_shared<tram::GradScaler>(tram::GradScalerOptions().init_scale(4096));
  scaled->set_grad_scaler(scaler);
  scaled->zero_grad();
  scaler->scale(b.loss()).backward();
  scaled->first_step();
  scaled->zero_grad();
  scaler->scale(b.loss()).backward();
  scaled->second_step();
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(a.params()[i], b.params()[i]));
}

TEST(LossScaling, ScalerStateIsPartOfTheCheckpoint) {
  Problem p;
  auto opt = tram::make_optimizer("sam", p.params(), tram::parse_options("lr=0.1"));
  auto scaler = std::make_shared<tram::GradScaler>(tram::GradScalerOptions().init_scale(64).growth_interval(1));
  opt->set_grad_scaler(scaler);
  opt->step(p.forward_closure());
  ASSERT_EQ(scaler->scale(), 128.0);
  std::stringstream buffer;
  torch::save(*opt, buffer);
  auto other = tram::make_optimizer("sam", p.params(), tram::parse_options("lr=0.1"));
  auto other_scaler = std::make_shared<tram::GradScaler>();
  other->set_grad_scaler(other_scaler);
  torch::load(*other, buffer);
  EXPECT_EQ(other_scaler->scale(), 128.0);
  // Without a scaler attached the checkpoint is rejected with what to do.
  buffer.seekg(0);
  auto bare = tram::make_optimizer("sam", p.params(), tram::parse_options("lr=0.1"));
  EXPECT_THROW(torch::load(*bare, buffer), c10::Error);
}

// A fresh FileStore path per test: Gloo's rendezvous must not see old keys.
std::string rendezvous_file(const std::string& name) {
  auto path = std::filesystem::temp_directory_path() /
              ("tram-" + name + "-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::remove(path);
  return "file://" + path.string();
}

TEST(DataParallel, TwoGlooRanksEqualOneProcessOnTheWholeBatch) {
  for (const auto& [method, options] : std::vector<std::pair<std::string, std::string>>{
           {"sam", ""}, {"asam", ""}, {"tram-prev", "scale=20"}, {"tram-noise", "scale=5"}, {"r3f", "lambda=0.4"},
           {"gsam", ""}, {"looksam", "k=2"}, {"vasso", ""}, {"wsam", ""}}) {
    Sharded whole;
    const auto expected = run(method, options, whole, 1);
    const std::string store = rendezvous_file(method);
    std::vector<std::vector<Tensor>> result(2);
    std::vector<std::string> errors(2);
    // Built before the threads start: the global generator is not thread-safe.
    std::vector<Sharded> shards(2);
    std::vector<std::thread> ranks;
    for (int rank = 0; rank < 2; ++rank) {
      ranks.emplace_back([&, rank] {
        try {
          Sharded& shard = shards[rank];
          auto group = tram::make_process_group(store, rank, 2, std::chrono::seconds(60));
          result[rank] = run(method, options, shard, 1, rank, 2, group);
        } catch (const std::exception& e) {
          errors[rank] = e.what();
        }
      });
    }
    for (auto& r : ranks) r.join();
    for (int rank = 0; rank < 2; ++rank) {
      ASSERT_EQ(errors[rank], "") << method << " rank " << rank;
      // Mean of two half-batch means = the whole-batch mean, up to rounding.
      EXPECT_LE(max_diff(expected, result[rank]), 1e-13) << method << " rank " << rank;
    }
    EXPECT_TRUE(torch::equal(result[0][0], result[1][0])) << method;  // every rank takes the same step
  }
}

TEST(DataParallel, ADeadRankMakesTheOthersFailWithinTheTimeout) {
  const std::string store = rendezvous_file("dead");
  std::string error;
  std::vector<Sharded> shards(2);  // before the threads: the global generator is not thread-safe
  auto started = std::chrono::steady_clock::now();
  std::thread survivor([&] {
    try {
      Sharded& shard = shards[0];
      auto group = tram::make_process_group(store, 0, 2, std::chrono::seconds(3));
      auto& p = shard.problem;
      auto opt = tram::make_optimizer("sam", p.params(), tram::parse_options("lr=0.1"));
      opt->set_process_group(group);
      for (int i = 0; i < 3; ++i) opt->step(p.forward_closure());
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  std::thread dying([&] {
    // Joins the group, then dies before the first collective of the step.
    try {
      auto group = tram::make_process_group(store, 1, 2, std::chrono::seconds(3));
      Sharded& shard = shards[1];
      auto opt = tram::make_optimizer("sam", shard.problem.params(), tram::parse_options("lr=0.1"));
      opt->set_process_group(group);
    } catch (const std::exception&) {
    }
  });
  dying.join();
  survivor.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_NE(error.find("SAM: the gradient all-reduce over the process group failed"), std::string::npos) << error;
  EXPECT_LT(seconds, 60.0);
}

}  // namespace
