// The fine-tuning pieces of tram::hf (schedule, CLI, the loop run_steps, the
// programs' train(): resume, corrupted states, data parallel) on the tiny
// fixture models and data written at test time, and the writer of the tiny
// models and data the programs' end-to-end CTest runs use
// (examples/CMakeLists.txt).
#include "scratch_directory.h"

#include <tram/hf/checkpoint.h>
#include <tram/hf/models/bert.h>
#include <tram/hf/models/gpt2.h>
#include <tram/hf/training/cli.h>
#include <tram/hf/training/schedule.h>
#include <tram/hf/training/tasks.h>
#include <tram/hf/training/trainer.h>
#include <tram/hf/tokenizers/tokenizer.h>

#include <tram/tram.h>


#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace tram::hf::training {
namespace {

namespace fs = std::filesystem;
using testing::directory_entries;
using testing::ScratchDirectory;

const fs::path kFixtures = TRAM_HF_FIXTURES;

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary | std::ios::trunc) << text;
}

void copy_bytes(const fs::path& from, const fs::path& to) { write_text(to, read_text(from)); }

// A CIFAR-100 binary file of `n` random 32x32 images whose fine label (0..2)
// is visible in the mean brightness, so a model can learn it.
void write_cifar(const fs::path& file, int n, unsigned seed) {
  std::string bytes;
  std::srand(seed);
  for (int i = 0; i < n; ++i) {
    const int label = i % 3;
    bytes.push_back(static_cast<char>(0));
    bytes.push_back(static_cast<char>(label));
    for (int p = 0; p < 3072; ++p) bytes.push_back(static_cast<char>(label * 80 + std::rand() % 80));
  }
  write_text(file, bytes);
}

// The ViT fixture with its config changed by `edit` (dropout, ...).
fs::path vit_model(const fs::path& directory, const std::function<void(nlohmann::json&)>& edit = {}) {
  auto config = nlohmann::json::parse(read_text(kFixtures / "models/vit/config.json"));
  if (edit) edit(config);
  write_text(directory / "config.json", config.dump(2));
  copy_bytes(kFixtures / "models/vit/model.safetensors", directory / "model.safetensors");
  return directory;
}

Options vit_options(const fs::path& model, const fs::path& data, const fs::path& out,
                    std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--model", model.string(), "--train", data.string(), "--eval",
                                   "test=" + data.string(), "--out", out.string(), "--batch-size", "8",
                                   "--lr", "0.05", "--quiet"};
  args.insert(args.end(), extra.begin(), extra.end());
  return parse_command_line(Program::kVit, args);
}

RunSummary run(const Options& options) {
  auto task = make_task(options);
  return train(*task, options);
}

std::map<std::string, torch::Tensor> checkpoint_tensors(const fs::path& directory) {
  CheckpointReader reader(directory / kWeightsFile);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& key : reader.keys()) tensors[key] = reader.read(key);
  return tensors;
}

double max_difference(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  double worst = 0.0;
  for (const auto& [key, tensor] : a) {
    if (!b.count(key)) continue;
    const auto other = b.at(key);
    worst = std::max(worst, (tensor.to(torch::kFloat64) - other.to(torch::kFloat64)).abs().max().item<double>());
  }
  return worst;
}

bool bit_identical(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [key, tensor] : a) {
    if (!b.count(key) || !torch::equal(tensor, b.at(key))) return false;
  }
  return true;
}

std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "";
}

// ----------------------------------------------------------------------------- schedule

TEST(Schedule, MatchesHuggingFaceFormulas) {
  // get_polynomial_decay_schedule_with_warmup(lr_init=1e-3, warmup=10, total=110, lr_end=1e-7, power=1)
  Schedule poly;
  poly.kind = ScheduleKind::kPolynomial;
  poly.peak_lr = 1e-3;
  poly.warmup_steps = 10;
  poly.total_steps = 110;
  poly.end_lr = 1e-7;
  EXPECT_DOUBLE_EQ(poly.lr_at(0), 0.0);
  EXPECT_DOUBLE_EQ(poly.lr_at(5), 5e-4);
  EXPECT_DOUBLE_EQ(poly.lr_at(10), 1e-3);
  EXPECT_NEAR(poly.lr_at(60), (1e-3 - 1e-7) * 0.5 + 1e-7, 1e-15);
  EXPECT_NEAR(poly.lr_at(110), 1e-7, 1e-15);
  poly.power = 2.0;
  EXPECT_NEAR(poly.lr_at(85), (1e-3 - 1e-7) * 0.25 * 0.25 + 1e-7, 1e-15);

  // get_cosine_schedule_with_warmup(num_warmup_steps=0, num_training_steps=100)
  Schedule cosine;
  cosine.kind = ScheduleKind::kCosine;
  cosine.peak_lr = 5e-4;
  cosine.total_steps = 100;
  EXPECT_DOUBLE_EQ(cosine.lr_at(0), 5e-4);
  EXPECT_NEAR(cosine.lr_at(25), 5e-4 * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_NEAR(cosine.lr_at(50), 2.5e-4, 1e-15);
  EXPECT_NEAR(cosine.lr_at(100), 0.0, 1e-15);
  cosine.warmup_steps = 20;
  EXPECT_DOUBLE_EQ(cosine.lr_at(10), 2.5e-4);
  EXPECT_NEAR(cosine.lr_at(60), 2.5e-4, 1e-15);

  Schedule constant;
  constant.kind = ScheduleKind::kConstant;
  constant.peak_lr = 0.1;
  constant.warmup_steps = 4;
  constant.total_steps = 10;
  EXPECT_DOUBLE_EQ(constant.lr_at(1), 0.025);
  EXPECT_DOUBLE_EQ(constant.lr_at(9), 0.1);
}

TEST(Schedule, SetLearningRateReachesTheBaseOptimizer) {
  auto weight = torch::zeros({3}, torch::requires_grad());
  auto optimizer = tram::make_optimizer("tram-prev", std::vector<torch::Tensor>{weight}, tram::parse_options("base=adam,lr=1e-3"));
  set_learning_rate(*optimizer, 0.25);
  for (const auto& group : optimizer->base().param_groups()) EXPECT_DOUBLE_EQ(group.options().get_lr(), 0.25);
}

// ----------------------------------------------------------------------------- the loop

// A small classification problem for run_steps: three classes, the index
// of the largest of the first three inputs.
struct Classification {
  torch::nn::Linear model{nullptr};
  torch::Tensor x, labels;
  Classification() {
    torch::manual_seed(0);
    model = torch::nn::Linear(4, 3);
    x = torch::randn({16, 4});
    labels = x.slice(1, 0, 3).argmax(1);
  }
  std::unique_ptr<tram::SharpnessAware> optimizer(const std::string& method, const std::string& options) {
    auto made = tram::make_optimizer(method, model->parameters(), tram::parse_options(options));
    made->set_module(model.ptr());
    return made;
  }
  tram::ForwardClosure closure() {
    return [this](const tram::Pass&) -> tram::PassOutput {
      auto logits = model->forward(x);
      return {torch::nn::functional::cross_entropy(logits, labels), logits, {}};
    };
  }
};

Progress silent_progress(int64_t steps) {
  static std::ostream null_stream(nullptr);
  return Progress("test", steps, "examples", null_stream, /*interactive=*/false);
}

TEST(RunSteps, TakesTheRangeInOrderAtTheScheduleRates) {
  Classification problem;
  auto optimizer = problem.optimizer("sam", "base=sgd,lr=0.1");
  const Schedule schedule{ScheduleKind::kCosine, 0.1, /*warmup_steps=*/0, /*total_steps=*/10};
  std::vector<int64_t> batches, after;
  std::vector<double> rates, losses;
  StepHooks hooks;
  hooks.batch = [&](int64_t step) {
    batches.push_back(step);
    return problem.closure();
  };
  hooks.after_step = [&](int64_t step, const tram::StepReport& report, double lr) {
    after.push_back(step);
    rates.push_back(lr);
    losses.push_back(report.loss);
    // The step ran at the rate it reports.
    EXPECT_DOUBLE_EQ(optimizer->base().param_groups().front().options().get_lr(), lr);
  };
  auto progress = silent_progress(schedule.total_steps);
  const LoopSummary first = run_steps(*optimizer, schedule, 0, 4, hooks, progress);
  EXPECT_EQ(batches, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(after, batches);
  for (size_t i = 0; i < rates.size(); ++i) EXPECT_DOUBLE_EQ(rates[i], schedule.lr_at(after[i]));
  EXPECT_EQ(first.last_loss, losses.back());
  EXPECT_EQ(first.tail_loss, 0.0);  // the tail (step 9) was not run
  EXPECT_GT(first.mean_radius, 0.0);
  EXPECT_EQ(first.mean_distance, 0.0);  // SAM has no trust region

  // Resumed at 4: steps 4..9, the tail is the last step.
  const LoopSummary rest = run_steps(*optimizer, schedule, 4, 10, hooks, progress);
  EXPECT_EQ(batches, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(rest.tail_loss, losses.back());
  EXPECT_LT(losses.back(), losses.front());  // it trained
  EXPECT_EQ(rest.skipped_ascents, 0);

  EXPECT_THROW(run_steps(*optimizer, schedule, 5, 11, hooks, progress), std::invalid_argument);
  EXPECT_THROW(run_steps(*optimizer, schedule, 6, 5, hooks, progress), std::invalid_argument);
  EXPECT_THROW(run_steps(*optimizer, schedule, 0, 1, StepHooks{}, progress), std::invalid_argument);
}

TEST(RunSteps, SummarisesTheTailRadiusAndDistance) {
  Classification problem;
  auto optimizer = problem.optimizer("tram-prev", "base=sgd,lr=0.05");
  const Schedule schedule{ScheduleKind::kConstant, 0.05, /*warmup_steps=*/0, /*total_steps=*/20};  // a tail of 2
  std::vector<tram::StepReport> reports;
  StepHooks hooks;
  hooks.batch = [&](int64_t) { return problem.closure(); };
  hooks.after_step = [&](int64_t, const tram::StepReport& report, double) { reports.push_back(report); };
  auto progress = silent_progress(schedule.total_steps);
  const LoopSummary summary = run_steps(*optimizer, schedule, 0, 20, hooks, progress);
  ASSERT_EQ(reports.size(), 20u);
  double radius = 0.0, distance = 0.0;
  for (const auto& report : reports) {
    radius += report.radius.front() / 20.0;
    distance += report.distance / 20.0;
  }
  EXPECT_EQ(summary.mean_radius, radius);
  EXPECT_EQ(summary.mean_distance, distance);
  EXPECT_GT(summary.mean_distance, 0.0);  // TRAM's trust-region distance
  EXPECT_EQ(summary.tail_loss, (reports[18].loss + reports[19].loss) / 2.0);
}

TEST(RunSteps, AThrowingHookEndsTheRun) {
  Classification problem;
  auto optimizer = problem.optimizer("sgd", "lr=0.1");
  const Schedule schedule{ScheduleKind::kConstant, 0.1, /*warmup_steps=*/0, /*total_steps=*/10};
  int64_t batches = 0;
  StepHooks hooks;
  hooks.batch = [&](int64_t) {
    ++batches;
    return problem.closure();
  };
  hooks.after_step = [&](int64_t step, const tram::StepReport&, double) {
    if (step == 2) throw std::runtime_error("stop at 2");
  };
  auto progress = silent_progress(schedule.total_steps);
  EXPECT_THROW(run_steps(*optimizer, schedule, 0, 10, hooks, progress), std::runtime_error);
  EXPECT_EQ(batches, 3);
}

TEST(RunSteps, EpochShuffleSeedsAreDistinctAcrossSeedsAndEpochs) {
  std::set<uint64_t> seen;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    for (int64_t epoch = 0; epoch < 300; ++epoch) seen.insert(epoch_shuffle_seed(seed, epoch));
  }
  EXPECT_EQ(seen.size(), 4u * 300u);
  // Pinned: every program run's data order follows from it.
  EXPECT_EQ(epoch_shuffle_seed(3, 2), 3000011u);
}

// ----------------------------------------------------------------------------- CLI

TEST(Cli, DefaultsFollowThePaper) {
  const auto vit = parse_command_line(Program::kVit, {"--model", "m", "--train", "t"});
  EXPECT_DOUBLE_EQ(vit.lr, 5e-4);
  EXPECT_EQ(vit.schedule, "cosine");
  EXPECT_EQ(vit.resolved_warmup(1000), 0);
  EXPECT_EQ(std::get<std::string>(vit.optimizer_option_map().at("base")), "sgd");

  const auto gpt2 = parse_command_line(Program::kGpt2, {"--model", "m", "--train", "t", "--optimizer", "asam+trpo",
                                                        "--optimizer-options", "rho=0.5"});
  EXPECT_DOUBLE_EQ(gpt2.lr, 2e-5);
  EXPECT_EQ(gpt2.schedule, "poly-warmup");
  EXPECT_EQ(gpt2.steps, 50000);
  EXPECT_EQ(gpt2.resolved_warmup(50000), 10000);
  EXPECT_EQ(gpt2.resolved_warmup(300), 60);
  const auto map = gpt2.optimizer_option_map();
  EXPECT_EQ(std::get<std::string>(map.at("base")), "adam");
  EXPECT_DOUBLE_EQ(std::get<double>(map.at("beta2")), 0.99);
  EXPECT_DOUBLE_EQ(std::get<double>(map.at("rho")), 0.5);
  EXPECT_EQ(gpt2.tokenizer, fs::path("m"));
  // A plain base takes no "base" key.
  const auto plain = parse_command_line(Program::kXlmr, {"--model", "m", "--train", "t", "--optimizer", "adamw"});
  EXPECT_EQ(plain.optimizer_option_map().count("base"), 0u);
  EXPECT_EQ(plain.batch_size, 32);

  const auto eval = parse_command_line(Program::kXlmr, {"--model=m", "--train", "t", "--eval", "en=a.tsv",
                                                        "--eval", "de=b.tsv", "--resume", "--steps", "7"});
  ASSERT_EQ(eval.eval.size(), 2u);
  EXPECT_EQ(eval.eval[1].first, "de");
  EXPECT_EQ(eval.eval[1].second, "b.tsv");
  EXPECT_TRUE(eval.resume);
  EXPECT_EQ(eval.steps, 7);
  EXPECT_TRUE(usage(Program::kGpt2).find("--optimizer-options") != std::string::npos);
}

TEST(Cli, ErrorsListTheValidChoices) {
  auto error = [](std::vector<std::string> args) {
    args.insert(args.begin(), {"--model", "m", "--train", "t"});
    try {
      parse_command_line(Program::kGpt2, args);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const auto method = error({"--optimizer", "tram-foo"});
  EXPECT_NE(method.find("tram-foo"), std::string::npos) << method;
  for (const auto& name : tram::method_names()) EXPECT_NE(method.find(name), std::string::npos) << method;
  const auto schedule = error({"--schedule", "linear"});
  for (const auto& name : schedule_names()) EXPECT_NE(schedule.find(name), std::string::npos) << schedule;
  const auto flag = error({"--learning-rate", "1"});
  EXPECT_NE(flag.find("--lr"), std::string::npos) << flag;
  EXPECT_NE(flag.find("--optimizer-options"), std::string::npos) << flag;
  EXPECT_NE(error({"--device", "tpu"}).find("cuda"), std::string::npos);
  EXPECT_NE(error({"--steps", "ten"}).find("--steps"), std::string::npos);
  EXPECT_NE(error({"--steps"}).find("missing value"), std::string::npos);
  EXPECT_NE(error({"--steps", "3", "--epochs", "1"}).find("not both"), std::string::npos);
  EXPECT_NE(error({"--batch-size", "6", "--grad-accum", "4"}).find("multiple"), std::string::npos);
  EXPECT_NE(error({"--eval", "nopath"}).find("NAME=PATH"), std::string::npos);
  EXPECT_NE(error({"--optimizer-options", "rho"}).find("--optimizer-options"), std::string::npos);
  EXPECT_NE(error({"--world-size", "2", "--rank", "2", "--rendezvous", "file:///x"}).find("--rank"),
            std::string::npos);
  EXPECT_THROW(parse_command_line(Program::kVit, {"--train", "t"}), UsageError);  // --model missing
}

// torchrun's environment: env:// by default, rank and world size from it, the
// CUDA device from LOCAL_RANK, and flags that disagree with it rejected.
TEST(Cli, TorchrunEnvironmentGivesRankWorldSizeAndDevice) {
  struct Environment {
    Environment() {
      setenv("RANK", "1", 1);
      setenv("WORLD_SIZE", "2", 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", "29511", 1);
      setenv("LOCAL_RANK", "1", 1);
    }
    ~Environment() {
      for (const char* name : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"}) unsetenv(name);
    }
  } environment;
  const std::vector<std::string> base = {"--model", "m", "--train", "t", "--batch-size", "4"};
  const auto o = parse_command_line(Program::kVit, base);
  EXPECT_EQ(o.rendezvous, "env://");
  EXPECT_EQ(o.world_size, 2);
  EXPECT_EQ(o.rank, 1);
  EXPECT_EQ(o.local_rank, 1);
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), base.begin(), base.end());
    return extra;
  };
  // An explicit rendezvous wins over the environment.
  const auto file = parse_command_line(Program::kVit, with({"--world-size", "2", "--rank", "0", "--rendezvous", "file:///x"}));
  EXPECT_EQ(file.rendezvous, "file:///x");
  EXPECT_EQ(file.rank, 0);
  try {
    parse_command_line(Program::kVit, with({"--rendezvous", "env://", "--rank", "0"}));
    ADD_FAILURE() << "a --rank that disagrees with RANK was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("RANK=1"), std::string::npos) << e.what();
  }
  unsetenv("MASTER_PORT");
  EXPECT_EQ(parse_command_line(Program::kVit, base).rendezvous, "");  // not launched: one process
  try {
    parse_command_line(Program::kVit, with({"--rendezvous", "env://"}));
  } catch (const UsageError& e) {
    ADD_FAILURE() << "env:// without MASTER_PORT fails in the store, naming it, not in parsing: " << e.what();
  }
}

TEST(Cli, UnknownOptimizerKeysAreUsageErrors) {
  ScratchDirectory scratch("train_keys");
  write_cifar(scratch.path() / "data.bin", 8, 1);
  const auto options = vit_options(vit_model(scratch.path() / "model"), scratch.path() / "data.bin",
                                   scratch.path() / "out", {"--optimizer-options", "rhoo=0.1", "--steps", "1"});
  auto task = make_task(options);
  try {
    train(*task, options);
    FAIL() << "expected a UsageError";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("rhoo"), std::string::npos) << error.what();
  }
}

// ----------------------------------------------------------------------------- resume

TEST(Resume, ContinuesBitIdentically) {
  ScratchDirectory scratch("train_resume");
  write_cifar(scratch.path() / "data.bin", 24, 2);
  const auto model = vit_model(scratch.path() / "model");  // the fixture's dropout 0.1: the RNG matters
  ASSERT_GT(nlohmann::json::parse(read_text(model / "config.json"))["hidden_dropout_prob"].get<double>(), 0.0);
  const auto data = scratch.path() / "data.bin";
  // 7 steps of 8 over 24 examples: three epochs, the resume point inside the second.
  const std::vector<std::string> common = {"--steps", "7", "--optimizer", "tram-noise", "--optimizer-options",
                                           "base=adam", "--seed", "3", "--schedule", "poly-warmup",
                                           "--warmup-steps", "2"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), common.begin(), common.end());
    return extra;
  };
  const auto straight = run(vit_options(model, data, scratch.path() / "straight", with({})));
  EXPECT_EQ(straight.steps, 7);

  const auto first =
      run(vit_options(model, data, scratch.path() / "resumed", with({"--stop-after", "4", "--save-every", "1"})));
  EXPECT_EQ(first.steps, 4);
  EXPECT_FALSE(fs::exists(scratch.path() / "resumed/checkpoint"));
  // Each save removed the previous state once run.json named the new one.
  const auto state = scratch.path() / "resumed/state";
  EXPECT_EQ(directory_entries(state), (std::vector<std::string>{"run-4.pt", "run.json"}));
  // What a write killed half-way leaves: its private temporary directory.
  fs::create_directories(state / ".run-5.pt.Xy12Zw");
  write_text(state / ".run-5.pt.Xy12Zw/run-5.pt.tmp", "half a state");
  const auto second = run(vit_options(model, data, scratch.path() / "resumed", with({"--resume"})));
  EXPECT_EQ(second.steps, 7);
  EXPECT_EQ(directory_entries(state), (std::vector<std::string>{"run-7.pt", "run.json"}));
  // Resuming a finished run takes no step and reports what the run ended with.
  const auto again = run(vit_options(model, data, scratch.path() / "resumed", with({"--resume"})));
  EXPECT_EQ(again.steps, 7);
  EXPECT_EQ(again.last_loss, straight.last_loss);

  const auto a = checkpoint_tensors(scratch.path() / "straight/checkpoint");
  const auto b = checkpoint_tensors(scratch.path() / "resumed/checkpoint");
  EXPECT_TRUE(bit_identical(a, b)) << "max difference " << max_difference(a, b);
  EXPECT_EQ(straight.last_loss, second.last_loss);

  // The comparison can fail: another seed (other dropout masks, noise and data order) differs.
  std::vector<std::string> other = with({});
  other[std::find(other.begin(), other.end(), "--seed") - other.begin() + 1] = "4";
  run(vit_options(model, data, scratch.path() / "other", other));
  EXPECT_FALSE(bit_identical(a, checkpoint_tensors(scratch.path() / "other/checkpoint")));

  // The metrics file of the resumed run has each training step once.
  const auto csv = read_text(scratch.path() / "resumed/metrics.csv");
  int loss_rows = 0;
  for (size_t at = csv.find(",train,loss,"); at != std::string::npos; at = csv.find(",train,loss,", at + 1)) ++loss_rows;
  EXPECT_EQ(loss_rows, 7) << csv;
}

TEST(Resume, RejectsCorruptedOrMismatchedStates) {
  ScratchDirectory scratch("train_corrupt");
  write_cifar(scratch.path() / "data.bin", 16, 3);
  const auto model = vit_model(scratch.path() / "model");
  const auto data = scratch.path() / "data.bin";
  const auto out = scratch.path() / "out";
  const std::vector<std::string> base = {"--steps", "4", "--optimizer", "sam"};
  run(vit_options(model, data, out, {"--steps", "4", "--optimizer", "sam", "--stop-after", "2"}));
  const auto state = out / "state/run-2.pt";
  const std::string good = read_text(state);
  auto resume = [&] { run(vit_options(model, data, out, {"--steps", "4", "--optimizer", "sam", "--resume"})); };

  std::string flipped = good;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x5a);
  write_text(state, flipped);
  auto message = error_of(resume);
  EXPECT_NE(message.find(state.string()), std::string::npos) << message;
  EXPECT_NE(message.find("corrupted"), std::string::npos) << message;

  write_text(state, good.substr(0, good.size() - 100));
  message = error_of(resume);
  EXPECT_NE(message.find(state.string()), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;

  write_text(state, good);
  const auto meta = out / "state/run.json";
  const std::string good_meta = read_text(meta);
  write_text(meta, good_meta.substr(0, good_meta.size() / 2));
  message = error_of(resume);
  EXPECT_NE(message.find(meta.string()), std::string::npos) << message;

  // run.json may only name the state file of its own step.
  std::string renamed = good_meta;
  renamed.replace(renamed.find("run-2.pt"), 8, "../x-2.pt");
  write_text(meta, renamed);
  message = error_of(resume);
  EXPECT_NE(message.find(meta.string()), std::string::npos) << message;
  EXPECT_NE(message.find("../x-2.pt"), std::string::npos) << message;

  // metrics.csv shorter than when the state was saved: rows would be lost.
  write_text(meta, good_meta);
  const auto csv = out / "metrics.csv";
  const std::string good_csv = read_text(csv);
  write_text(csv, good_csv.substr(0, good_csv.size() - 5));
  message = error_of(resume);
  EXPECT_NE(message.find(csv.string()), std::string::npos) << message;
  EXPECT_NE(message.find("start the run afresh"), std::string::npos) << message;
  write_text(csv, good_csv);

  message = error_of([&] {
    run(vit_options(model, data, out, {"--steps", "4", "--optimizer", "asam", "--resume"}));
  });
  EXPECT_NE(message.find("optimizer"), std::string::npos) << message;
  EXPECT_EQ(error_of(resume), "");  // the restored files resume
}

// ----------------------------------------------------------------------------- data parallel

TEST(DataParallel, TwoRanksMatchOneRankWithTheWholeBatch) {
  ScratchDirectory scratch("train_ddp");
  write_cifar(scratch.path() / "data.bin", 16, 4);
  const auto model = vit_model(scratch.path() / "model", [](nlohmann::json& config) {
    config["hidden_dropout_prob"] = 0.0;
    config["attention_probs_dropout_prob"] = 0.0;
  });
  const auto data = scratch.path() / "data.bin";
  const std::vector<std::string> common = {"--steps", "3", "--optimizer", "tram-prev", "--dtype", "float64",
                                           "--grad-accum", "2", "--optimizer-options", "base=sgd,momentum=0.9"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), common.begin(), common.end());
    return extra;
  };
  run(vit_options(model, data, scratch.path() / "one", with({})));

  const std::string rendezvous = "file://" + (scratch.path() / "rendezvous").string();
  std::vector<Options> options;
  std::vector<std::unique_ptr<Task>> tasks;
  for (int rank = 0; rank < 2; ++rank) {  // before the threads: the global generator is not thread-safe
    options.push_back(vit_options(model, data, scratch.path() / "two",
                                  with({"--world-size", "2", "--rank", std::to_string(rank), "--rendezvous", rendezvous})));
    tasks.push_back(make_task(options.back()));
  }
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] { errors[rank] = error_of([&] { train(*tasks[rank], options[rank]); }); });
  }
  for (auto& thread : ranks) thread.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");

  const auto one = checkpoint_tensors(scratch.path() / "one/checkpoint");
  const auto two = checkpoint_tensors(scratch.path() / "two/checkpoint");
  const auto fixture = checkpoint_tensors(model);
  ASSERT_EQ(one.size(), two.size());
  EXPECT_GT(max_difference(one, fixture), 1e-4);  // training moved the weights
  EXPECT_LT(max_difference(one, two), 1e-10);     // float64: equal up to the order of the reductions
  EXPECT_TRUE(fs::exists(scratch.path() / "two/metrics.csv"));
  EXPECT_TRUE(fs::exists(scratch.path() / "two/state/rng-rank1-3.pt"));
}

// ----------------------------------------------------------------------------- the programs

// Tiny models whose vocabularies match the fixture tokenizers, and tiny data,
// for the programs: the fixture checkpoints have 100-token vocabularies, the
// fixture tokenizers more.
void write_program_fixtures(const fs::path& root) {
  auto tokenizer_model = [&](const std::string& model, const std::string& tokenizer) {
    const fs::path directory = root / (model + "-" + tokenizer);
    auto config = nlohmann::json::parse(read_text(kFixtures / "models" / model / "config.json"));
    const auto loaded = tokenizers::load_tokenizer(kFixtures / "tokenizers" / tokenizer);
    config["vocab_size"] = loaded->vocab_size();
    fs::create_directories(directory);
    const HfConfig hf(config, (directory / "config.json").string());
    torch::manual_seed(0);
    if (model == "gpt2") {
      models::GPT2LMHeadModel net(models::GPT2Config::from(hf));
      save_pretrained(*net, hf, directory);
    } else {
      auto net = models::make_sequence_classifier(models::EncoderConfig::from(hf));
      save_pretrained(*net, hf, directory);
    }
    copy_tokenizer_files(kFixtures / "tokenizers" / tokenizer, directory);
  };
  tokenizer_model("gpt2", "gpt2");
  tokenizer_model("xlmr", "xlmr");
  tokenizer_model("bert", "bert");
  fs::create_directories(root / "vit");
  vit_model(root / "vit");
  write_cifar(root / "cifar.bin", 24, 5);

  const std::vector<std::string> law = {"The court held that the contract was void.",
                                        "The appeal was dismissed with costs.",
                                        "A statute must be read as a whole.", "The tenant paid the rent late."};
  const std::vector<std::string> food = {"Bake the bread for forty minutes.", "Add salt and a little butter.",
                                         "The soup needs more pepper.", "Serve the cake with fresh cream."};
  for (int domain = 0; domain < 2; ++domain) {
    const auto& lines = domain == 0 ? law : food;
    const std::string name = domain == 0 ? "law" : "food";
    for (int file = 0; file < 4; ++file) {
      std::string text;
      for (int repeat = 0; repeat < 3; ++repeat) {
        for (const auto& line : lines) text += line + " ";
      }
      write_text(root / "text" / name / ("doc" + std::to_string(file) + ".txt"), text + "\n");
    }
  }
  std::string labelled, nli = "premise\thypothesis\tlabel\n";
  const char* const nli_labels[] = {"entailment", "neutral", "contradiction"};
  for (int i = 0; i < 16; ++i) {
    labelled += (i % 2 ? food : law)[static_cast<size_t>(i / 2 % 4)] + "\t" + (i % 2 ? "food" : "law") + "\n";
    nli += law[static_cast<size_t>(i % 4)] + "\t" + food[static_cast<size_t>(i / 4 % 4)] + "\t" + nli_labels[i % 3] + "\n";
  }
  write_text(root / "labelled.tsv", labelled);
  write_text(root / "nli.tsv", nli);
}

// For the CTest entries of examples/CMakeLists.txt: writes the fixtures to
// $TRAM_PROGRAM_FIXTURES (skipped when it is not set).
TEST(ProgramFixtures, Write) {
  const char* root = std::getenv("TRAM_PROGRAM_FIXTURES");
  if (root == nullptr) GTEST_SKIP() << "TRAM_PROGRAM_FIXTURES is not set";
  write_program_fixtures(root);
  EXPECT_TRUE(fs::exists(fs::path(root) / "gpt2-gpt2/model.safetensors"));
}


}  // namespace
}  // namespace tram::hf::training
