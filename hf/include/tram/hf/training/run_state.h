// The resumable run state of train() (trainer.h), under <out>/state/:
//   run-<step>.pt  model, optimizer, step, data position, last loss, RNG
//                  states (torch archive)
//   run.json       which file is the state: format, file name, size and
//                  CRC-32, step, the length of metrics.csv at the save, settings
//   rng-rank<R>-<step>.pt  the RNG state of every other rank
// A new state is written (atomically) next to the previous one, and only
// then does run.json switch to it (atomically) and the previous file go: a
// run killed at any point leaves run.json naming a complete state.
// Its own header so that the reader can be tested and fuzzed on its own
// (fuzz/fuzz_run_state.cpp) without a whole training run.
#pragma once

#include <tram/hf/training/cli.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>

namespace torch::nn {
class Module;
}
namespace tram {
class SharpnessAware;
}

namespace tram::hf::training {

// Where a run is in its schedule and data order.
struct Position {
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t index = 0;           // within the epoch's shuffle
  uint64_t metrics_bytes = 0;  // the length of metrics.csv when the state was saved
  double last_loss = 0.0;      // of the last step taken: summary.json reports it
};

// What must match between the run that wrote a state and the one resuming it.
nlohmann::json run_settings(const Options& options, int64_t train_size, int64_t total);

class RunState {
 public:
  // The state of the run `options` describes, in options.out / "state".
  // `options` must outlive this object.
  RunState(const Options& options, nlohmann::json settings);

  // Writes the state of `position`; a no-op when the state on disk (written
  // or loaded by this object) is already that of position.step.
  void save(torch::nn::Module& module, const tram::SharpnessAware& optimizer, const Position& position);
  // Restores module, optimizer and RNGs; returns the position. Throws
  // std::runtime_error naming run.json or the state file and what is wrong
  // (missing, another run's settings, truncated, corrupted, not loadable).
  Position load(torch::nn::Module& module, tram::SharpnessAware& optimizer);

 private:
  void remove_older_files(const std::string& keep, const std::string& also_keep) const;

  const Options& options_;
  nlohmann::json settings_;
  std::filesystem::path directory_;
  int64_t saved_step_ = -1;  // the step of the state on disk, if this object wrote or read it
};

// Test-only: with TRAM_TEST_STALL=<point>@<step> in the environment, the run
// announces "tram-test-stall: <point>@<step>" on stderr when it reaches that
// point and then sleeps, so that a test can SIGKILL it exactly there
// (examples/tests/check_kill.py, check_soak.py). The points:
//   step             step <step>'s metrics rows written (unflushed), no save yet
//   state-temporary  run-<step>.pt written to its temporary file, not renamed
//   state-between    run-<step>.pt in place, run.json still the previous state's
//   final            the final evaluation's rows flushed; checkpoint/ and
//                    summary.json not yet written
// Without the variable (any real run) this is one getenv per call.
void test_stall(const char* point, int64_t step);

}  // namespace tram::hf::training
