// The fine-tuning loop shared by the three programs: one engine, with a small
// task policy saying how to run a batch and how to evaluate a set.
//
//   ImageClassificationTask task(options);    // tasks.h
//   const RunSummary summary = train(task, options);
//
// Every step: the schedule's rate (set_learning_rate), the rank's shard of the
// global batch cut into --grad-accum micro-batches (Pass::micro_batch() says
// which), one SharpnessAware::step(ForwardClosure). The data order is a
// deterministic shuffle per epoch (seed, epoch); the last partial batch of an
// epoch is dropped.
//
// Output (rank 0 only), under --out:
//   metrics.csv     step,split,metric,value   (train loss and lr every step,
//                   each --eval set before training, every --eval-every and at the end)
//   summary.json    the run's settings and final metrics
//   checkpoint/     save_pretrained() of the fine-tuned model + the tokenizer files
//   state/          the resumable run state: run.pt (model, optimizer, step,
//                   data position, RNG states), run.json (what run.pt must be:
//                   size and CRC-32, step, settings); rng-rank<R>.pt per other rank
#pragma once

#include <tram/hf/training/cli.h>

#include <tram/closure.h>

#include <torch/nn/module.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tram::hf::training {

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

}  // namespace tram::hf::training
