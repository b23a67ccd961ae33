// The out-of-distribution study (the project's main job): what the three
// experiments share.
//
// An experiment pre-trains a small model once (cached as a Hugging Face style
// checkpoint directory, so fine-tuning loads it through the same code path as
// a real checkpoint), then fine-tunes it with every method and seed on
// in-distribution data and evaluates in distribution and out of distribution.
// Each finished run is stored as a JSON record; a record whose fingerprint
// matches the current settings is never recomputed, so an interrupted study
// resumes where it stopped.
#pragma once

#include <tram/tram.h>

#include <tram/hf/training/trainer.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tram::study {

// The result of one (experiment, method, seed) run.
struct RunRecord {
  std::string experiment;
  std::string method;
  int64_t seed = 0;
  // The table's columns, in order: the in-distribution metric first, then
  // one per out-of-distribution set (the zero-shot average is computed by
  // the report from these).
  std::vector<std::pair<std::string, double>> metrics;
  // Analysis values (sharpness, CKA), by name.
  std::map<std::string, double> analysis;
  double train_loss = 0.0;  // mean task loss of the last 10% of steps
  double seconds = 0.0;
  std::string fingerprint;

  double metric(const std::string& name) const;  // throws naming the record when absent
};

void save_record(const RunRecord& record, const std::filesystem::path& file);
// std::nullopt-like: returns false when the file is absent or unreadable.
bool load_record(const std::filesystem::path& file, RunRecord& record);

// How an experiment's table reads.
struct TableSpec {
  std::string title;             // "Vision: Fashion-MNIST classes 5-9 after pre-training on 0-4"
  std::string metric;            // "accuracy (%)" or "perplexity"
  bool higher_is_better = true;
  std::string in_distribution;   // the column name of the in-distribution metric
  std::vector<std::string> out_of_distribution;  // the other columns, in order
  std::vector<std::string> analysis;             // analysis columns, if any
};

// What every experiment provides to the driver.
class Experiment {
 public:
  virtual ~Experiment() = default;
  virtual std::string name() const = 0;  // "vision", "lm", "crosslingual"
  virtual TableSpec table() const = 0;
  // Everything that changes the results (sizes, steps, rates): records with
  // another fingerprint are recomputed.
  virtual std::string fingerprint() const = 0;
  // Loads the data and pre-trains the model, or loads it from `cache_dir`.
  virtual void prepare(const std::filesystem::path& cache_dir) = 0;
  // Fine-tunes from the pre-trained checkpoint with `method` and evaluates.
  virtual RunRecord run(const std::string& method, int64_t seed) = 0;
  // Rows evaluated once, without fine-tuning (e.g. "pre-trained"), if any.
  virtual std::vector<RunRecord> reference_rows() { return {}; }
};

// ---------------------------------------------------------------------------
// Training: every pre-training and fine-tuning run on tram::hf's loop
// ---------------------------------------------------------------------------

// The optimizer of a run: `method` (a tram factory name, or a plain base,
// optionally followed by ':' and factory options, "tram-prev:scale=100")
// wrapped around Adam with the paper's betas (hf::training::kPaperAdamBetas,
// docs/ALGORITHMS.md §10; "adam"/"adamw" alone are the plain optimizers,
// "sgd" plain SGD), the method's own options at the factory's defaults (the
// paper's radii).
std::unique_ptr<SharpnessAware> make_study_optimizer(const std::string& method, torch::nn::Module& model,
                                                     double lr);

// Runs the schedule's steps with hf::training::run_steps; batch(step)
// returns the forward closure of that step's batch. A progress bar (or plain
// lines) reports loss, rate, throughput and ETA under `label`. Throws naming
// the step when the loss is not finite. The summary's tail_loss is the
// record's train_loss.
hf::training::LoopSummary train(SharpnessAware& optimizer, const hf::training::Schedule& schedule,
                                const std::function<ForwardClosure(int64_t)>& batch, int64_t items_per_step,
                                const std::string& label, const std::string& unit);

// The rows of each fine-tuning step's batch: consecutive slices of a random
// permutation of 0..rows-1, a new permutation at the start of every epoch,
// drawn from LibTorch's global generator (so the run's seed decides the
// order). Steps must be asked for in order.
class EpochBatches {
 public:
  EpochBatches(int64_t rows, int64_t batch) : rows_(rows), batch_(batch) {}
  torch::Tensor rows_of(int64_t step);

 private:
  int64_t rows_, batch_;
  torch::Tensor order_;
};

// A fine-tuning run's record with what every experiment fills the same way
// (identity, training loss, mean radius and d); the
// experiment adds its metrics, analysis, time and fingerprint.
RunRecord new_record(const std::string& experiment, const std::string& method, int64_t seed,
                     const hf::training::LoopSummary& summary);

// Writes/reads a pre-trained checkpoint together with a stamp of the
// settings that made it: a checkpoint with another stamp is made again.
bool cached_checkpoint_matches(const std::filesystem::path& directory, const std::string& stamp);
void stamp_checkpoint(const std::filesystem::path& directory, const std::string& stamp);

// `fingerprint` with LibTorch's current thread count appended: pre-trained
// weights and run results depend on it too (LibTorch splits its reductions
// by thread), so cache stamps and record fingerprints carry it.
std::string with_thread_count(const std::string& fingerprint);

// Seeds LibTorch's global generator for everything a run draws (head
// initialisation, batch order, noise, masking).
void seed_everything(uint64_t seed);

}  // namespace tram::study
