// The programs' resumable run state (tram::hf::training::RunState::load):
// run.json and the state file it names (run-1.pt), loaded into a small model
// and a SAM optimizer.
//
// The first byte's lowest bit picks what the rest of the input is:
//  0: run.json, next to a valid run-1.pt (written once, at start-up);
//  1: run-1.pt, next to a run.json that describes it (its size and CRC-32 and
//     this run's settings), so that the fuzzer gets past the CRC check to
//     LibTorch's archive reader and tram's state readers.
// LibTorch's archive reader's messages do not name the file, but RunState
// prefixes every rejection with the file at fault (run.json or run-1.pt).
// TRAM_FUZZ_WRITE_SEEDS=<dir> writes the two seeds (a valid state in each
// mode) to <dir>.
#include "fuzz_util.h"

#include <tram/hf/training/run_state.h>
#include <tram/tram.h>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>

#include <zlib.h>

#include <fstream>
#include <iterator>

namespace {

namespace training = tram::hf::training;

struct Run {
  training::Options options;
  nlohmann::json settings;
  std::shared_ptr<torch::nn::LinearImpl> module;
  std::unique_ptr<tram::SharpnessAware> optimizer;

  Run() {
    options.out = tram::fuzz::scratch_directory();
    options.device = "cpu";
    options.optimizer = "sam";
    settings = training::run_settings(options, /*train_size=*/16, /*total=*/4);
    torch::manual_seed(0);
    module = std::make_shared<torch::nn::LinearImpl>(4, 3);
    optimizer = tram::make_optimizer("sam", module->parameters(), tram::parse_options("base=adam,lr=0.01"));
    optimizer->set_module(module);
  }
  void step() {
    const auto x = torch::randn({8, 4});
    const auto y = torch::randint(0, 3, {8}, torch::kLong);
    optimizer->step(tram::ForwardClosure([&](const tram::Pass& pass) {
      const auto logits = module->forward(pass.perturb(x));
      return tram::PassOutput{torch::nn::functional::cross_entropy(logits, y), logits, {}};
    }));
  }
};

std::string read_bytes(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A valid run-1.pt after one step, and the run.json that describes it.
const std::pair<std::string, std::string>& valid_state() {
  static const std::pair<std::string, std::string> state = [] {
    Run run;
    run.step();
    training::RunState(run.options, run.settings).save(*run.module, *run.optimizer, {1, 0, 4});
    const auto directory = tram::fuzz::scratch_subdirectory("state");
    std::pair<std::string, std::string> bytes{read_bytes(directory / "run-1.pt"), read_bytes(directory / "run.json")};
    std::filesystem::remove(directory / "run-1.pt");
    std::filesystem::remove(directory / "run.json");
    // The seeds of fuzz/corpus/run_state: a valid state in each mode.
    if (const char* seeds = std::getenv("TRAM_FUZZ_WRITE_SEEDS")) {
      std::ofstream(std::filesystem::path(seeds) / "valid-run-json", std::ios::binary) << '\0' << bytes.second;
      std::ofstream(std::filesystem::path(seeds) / "valid-run-pt", std::ios::binary) << '\1' << bytes.first;
    }
    return bytes;
  }();
  return state;
}

std::string describe(std::string_view run_pt, const nlohmann::json& settings) {
  const auto crc = crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(run_pt.data()),
                         static_cast<uInt>(run_pt.size()));
  return nlohmann::json{{"format", "tram-run-state-2"},
                        {"file", "run-1.pt"},
                        {"bytes", run_pt.size()},
                        {"crc32", static_cast<uint32_t>(crc)},
                        {"step", 1},
                        {"epoch", 0},
                        {"index", 4},
                        {"metrics_bytes", 0},
                        {"settings", settings}}
      .dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& valid_pt = valid_state().first;  // also on the empty input: it writes the seeds
  if (size == 0) return 0;
  Run run;
  const std::string_view rest = tram::fuzz::as_text(data + 1, size - 1);
  const bool fuzz_pt = data[0] & 1;
  // RunState reads <out>/state/, emptied after every input.
  tram::fuzz::scratch_subdirectory("state");
  tram::fuzz::ScratchFiles files;
  files.write("state/run-1.pt", fuzz_pt ? rest : std::string_view(valid_pt));
  files.write("state/run.json", fuzz_pt ? std::string_view(describe(rest, run.settings)) : rest);
  tram::fuzz::reject_cleanly(
      [&] {
        training::RunState(run.options, run.settings).load(*run.module, *run.optimizer);
        run.step();
      },
      "state/run");  // run.json or run-1.pt
  return 0;
}
