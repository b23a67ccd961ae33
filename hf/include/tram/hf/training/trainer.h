// The training loop of tram::hf: run_steps, the one loop over optimizer steps,
// and train(Task, Options), the programs' fine-tuning run built on it. The
// study (examples/study) runs its pre-training and fine-tuning on run_steps too.
//
//   ImageClassificationTask task(options);    // tasks.h
//   const RunSummary summary = train(task, options);
//
// Every step of train(): the schedule's rate (set_learning_rate), the rank's
// shard of the global batch cut into --grad-accum micro-batches
// (Pass::micro_batch() says which), one SharpnessAware::step(ForwardClosure).
// The data order is a deterministic shuffle per epoch (seed, epoch); the last
// partial batch of an epoch is dropped.
//
// Output of train() (rank 0 only), under --out:
//   metrics.csv     step,split,metric,value   (train loss and lr every step,
//                   each --eval set before training, every --eval-every and at the end)
//   summary.json    the run's settings and final metrics
//   checkpoint/     save_pretrained() of the fine-tuned model + the tokenizer files
//   state/          the resumable run state (run_state.h): run-<step>.pt (model, optimizer,
//                   step, data position, RNG states), run.json (which file is
//                   the state, its size and CRC-32, the step, the settings, the
//                   length of metrics.csv at the save); rng-rank<R>-<step>.pt
//                   per other rank
// Every file is replaced atomically (atomic_file.h), and a new state is
// written next to the previous one before run.json switches to it: a run
// killed at any point resumes from its last complete state, and --resume
// cuts metrics.csv back to that state's rows.
#pragma once

#include <tram/hf/training/cli.h>
#include <tram/hf/training/progress.h>
#include <tram/hf/training/schedule.h>

#include <tram/closure.h>

#include <torch/nn/module.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tram {
class SharpnessAware;
}

namespace tram::hf::training {

// ---------------------------------------------------------------------------
// run_steps: the loop
// ---------------------------------------------------------------------------

// What run_steps asks of its caller at each step.
struct StepHooks {
  // The forward closure of step `step` (0-based, counted over the whole
  // schedule). Asked for once per step, in step order, right before the
  // step: a batch drawn from LibTorch's generator is drawn before the step's
  // own draws (noise, dropout). Required.
  std::function<tram::ForwardClosure(int64_t step)> batch;
  // Called after step `step` was taken and the progress line updated, with
  // its report and rate: metrics, evaluation, saving, or a check that throws
  // to end the run. Optional.
  std::function<void(int64_t step, const tram::StepReport& report, double lr)> after_step;
  // What one step counts for the progress line's throughput (examples, tokens).
  int64_t items_per_step = 1;
};

// What run_steps saw over the steps it ran.
struct LoopSummary {
  double last_loss = 0.0;  // the last step's pass-1 loss
  // Mean pass-1 loss of the schedule's last tenth of steps (at least one
  // step), of those this call ran.
  double tail_loss = 0.0;
  // Mean ascent radius of the first group and mean trust-region distance d
  // over the schedule's steps (0 without an ascent / a trust region); each
  // step this call ran adds its value / schedule.total_steps.
  double mean_radius = 0.0;
  double mean_distance = 0.0;
  // Mean forward passes per step (StepReport::passes), over the schedule's
  // steps like the radius: the method's cost (LookSAM and interval vary it).
  double mean_passes = 0.0;
  int64_t skipped_ascents = 0;  // steps whose ascent was skipped (non-finite gradient norm)
};

// Takes the optimizer steps first .. end-1 of `schedule` (0 <= first <= end
// <= schedule.total_steps; a resumed run starts past 0, a stopped one ends
// before the total): each at schedule.lr_at(step) (set_learning_rate), with
// the closure hooks.batch(step), reported on `progress` ("loss .. lr ..").
// Throws std::invalid_argument for an invalid schedule or range.
LoopSummary run_steps(tram::SharpnessAware& optimizer, const Schedule& schedule, int64_t first, int64_t end,
                      const StepHooks& hooks, Progress& progress);

// ---------------------------------------------------------------------------
// train: a program's fine-tuning run
// ---------------------------------------------------------------------------

// One evaluation result: metric name -> value ("loss", "accuracy", "perplexity").
using Metrics = std::vector<std::pair<std::string, double>>;

class Task {
 public:
  virtual ~Task() = default;

  virtual std::shared_ptr<torch::nn::Module> module() = 0;
  // Training examples; train() draws batches of indices into [0, train_size()).
  virtual int64_t train_size() const = 0;
  // The pass's output on the training examples `indices` (loss: their mean).
  virtual tram::PassOutput forward(const std::vector<int64_t>& indices, const tram::Pass& pass) = 0;
  // The --eval sets, in order, and evaluating one of them (in eval mode, no grad).
  virtual std::vector<std::string> eval_names() const = 0;
  virtual Metrics evaluate(size_t set, int64_t batch_size) = 0;
  // Writes the fine-tuned model (config.json, model.safetensors, tokenizer files).
  virtual void save_pretrained(const std::filesystem::path& directory) const = 0;
  // What an example counts for the throughput: ("examples", 1), ("tokens", block size).
  virtual std::pair<std::string, int64_t> unit() const { return {"examples", 1}; }
};

struct RunSummary {
  int64_t steps = 0;         // optimizer steps done (in total, over resumes)
  double last_loss = 0.0;    // the last step's training loss
  std::map<std::string, Metrics> eval;  // the last evaluation of each set
};

// Runs (or, with options.resume, continues) the training of `task`.
RunSummary train(Task& task, const Options& options);

// The steps a run takes: --steps, or --epochs over batches of --batch-size.
int64_t total_steps(const Options& options, int64_t train_size);

// The seed of the data shuffle of `epoch` in a run with --seed `seed`.
uint64_t epoch_shuffle_seed(uint64_t seed, int64_t epoch);

}  // namespace tram::hf::training
