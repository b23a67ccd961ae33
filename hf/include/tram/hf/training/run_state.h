// The resumable run state of train() (trainer.h), under <out>/state/:
//   run.pt    model, optimizer, step, data position, RNG states (torch archive)
//   run.json  what run.pt must be: format, size and CRC-32, step, settings
//   rng-rank<R>.pt  the RNG state of every other rank
// Its own header so that the reader can be tested and fuzzed on its own
// (fuzz/fuzz_run_state.cpp) without a whole training run.
#pragma once

#include <tram/hf/training/cli.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>

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
  int64_t index = 0;  // within the epoch's shuffle
};

// What must match between the run that wrote a state and the one resuming it.
nlohmann::json run_settings(const Options& options, int64_t train_size, int64_t total);

class RunState {
 public:
  // The state of the run `options` describes, in options.out / "state".
  // `options` must outlive this object.
  RunState(const Options& options, nlohmann::json settings);

  void save(torch::nn::Module& module, const tram::SharpnessAware& optimizer, const Position& position) const;
  // Restores module, optimizer and RNGs; returns the position. Throws
  // std::runtime_error naming run.json or run.pt and what is wrong (missing,
  // another run's settings, truncated, corrupted, not loadable).
  Position load(torch::nn::Module& module, tram::SharpnessAware& optimizer) const;

 private:
  const Options& options_;
  nlohmann::json settings_;
  std::filesystem::path directory_;
};

}  // namespace tram::hf::training
