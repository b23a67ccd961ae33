#include <tram/hf/training/run_state.h>

#include <tram/hf/atomic_file.h>

#include <tram/tram.h>

#include <ATen/Context.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <zlib.h>

#include <dirent.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace tram::hf::training {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// 2: the state file is named after its step (run-<step>.pt) and run.json
// records the length of metrics.csv at the save.
constexpr const char* kStateFormat = "tram-run-state-2";

// CRC-32 and size of a file, to reject truncated or corrupted states before
// LibTorch's reader sees them.
std::pair<uint64_t, uint32_t> file_crc(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("run state " + file.string() + ": cannot be opened");
  std::vector<char> buffer(1 << 20);
  uLong crc = crc32(0L, Z_NULL, 0);
  uint64_t size = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const auto got = in.gcount();
    if (got <= 0) break;
    crc = crc32(crc, reinterpret_cast<const Bytef*>(buffer.data()), static_cast<uInt>(got));
    size += static_cast<uint64_t>(got);
  }
  return {size, static_cast<uint32_t>(crc)};
}

std::vector<torch::Device> generator_devices(const Options& options) {
  std::vector<torch::Device> devices = {torch::kCPU};
  if (options.device == "cuda") devices.emplace_back(torch::kCUDA, options.local_rank);
  return devices;
}

void write_rng(torch::serialize::OutputArchive& archive, const Options& options) {
  for (const auto& device : generator_devices(options)) {
    auto generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    archive.write(std::string("rng/") + c10::DeviceTypeName(device.type(), true), generator.get_state());
  }
}

void read_rng(torch::serialize::InputArchive& archive, const Options& options) {
  for (const auto& device : generator_devices(options)) {
    torch::Tensor state;
    archive.read(std::string("rng/") + c10::DeviceTypeName(device.type(), true), state);
    auto generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state);
  }
}

int64_t read_integer(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  archive.read(key, value);
  return value.toInt();
}

// The names in `directory` (POSIX readdir: the LibTorch wheel's libtorch.so
// shadows some std::filesystem functions, see atomic_file.cpp).
std::vector<std::string> names_in(const fs::path& directory) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return names;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  return names;
}

// The files of one save, named after its step so that a new state never
// overwrites the one run.json describes: run-<step>.pt is written (atomically)
// next to the previous state's file, then run.json is replaced to name it
// (atomically), and only then is the previous file removed. A kill at any
// point leaves run.json describing a complete state file.
std::string state_file_name(int rank, int64_t step) {
  const std::string suffix = std::to_string(step) + ".pt";
  return rank == 0 ? "run-" + suffix : "rng-rank" + std::to_string(rank) + "-" + suffix;
}

}  // namespace

void test_stall(const char* point, int64_t step) {
  const char* wanted = std::getenv("TRAM_TEST_STALL");
  if (wanted == nullptr || std::string(wanted) != std::string(point) + "@" + std::to_string(step)) return;
  std::cerr << "tram-test-stall: " << wanted << std::endl;
  std::this_thread::sleep_for(std::chrono::seconds(300));  // a test kills it long before
}

json run_settings(const Options& options, int64_t train_size, int64_t total) {
  return {{"program", program_name(options.program)},
          {"optimizer", options.optimizer},
          {"optimizer_options", options.optimizer_options},
          {"batch_size", options.batch_size},
          {"grad_accum", options.grad_accum},
          {"world_size", options.world_size},
          {"seed", options.seed},
          {"train_size", train_size},
          {"total_steps", total}};
}

RunState::RunState(const Options& options, json settings) : options_(options), settings_(std::move(settings)) {
  directory_ = options.out / "state";
}

void RunState::save(torch::nn::Module& module, const tram::SharpnessAware& optimizer, const Position& position) {
  if (position.step == saved_step_) return;  // on disk already: rewriting would reopen a window
  fs::create_directories(directory_);
  const std::string name = state_file_name(options_.rank, position.step);
  torch::serialize::OutputArchive archive;
  if (options_.rank == 0) {
    torch::serialize::OutputArchive model(archive.compilation_unit()), state(archive.compilation_unit());
    module.save(model);
    optimizer.save(state);
    archive.write("model", model);
    archive.write("optimizer", state);
    archive.write("run/step", c10::IValue(position.step));
    archive.write("run/epoch", c10::IValue(position.epoch));
    archive.write("run/index", c10::IValue(position.index));
    archive.write("run/last_loss", c10::IValue(position.last_loss));
  }
  write_rng(archive, options_);
  const fs::path file = directory_ / name;
  write_file_atomically(file, [&](const fs::path& temporary) {
    archive.save_to(temporary.string());
    test_stall("state-temporary", position.step);
  });
  if (options_.rank == 0) {
    test_stall("state-between", position.step);
    const auto [bytes, crc] = file_crc(file);
    json meta = {{"format", kStateFormat},
                 {"file", name},
                 {"bytes", bytes},
                 {"crc32", crc},
                 {"step", position.step},
                 {"epoch", position.epoch},
                 {"index", position.index},
                 {"metrics_bytes", position.metrics_bytes},
                 {"settings", settings_}};
    write_text_atomically(directory_ / "run.json", meta.dump(2) + "\n");
  }
  // Another rank keeps its previous file too: rank 0's run.json may still
  // name that step (the ranks save without a barrier).
  remove_older_files(name, options_.rank == 0 ? name : state_file_name(options_.rank, saved_step_));
  saved_step_ = position.step;
}

Position RunState::load(torch::nn::Module& module, tram::SharpnessAware& optimizer) {
  const fs::path meta_file = directory_ / "run.json";
  auto fail = [](const fs::path& where, const std::string& what) -> std::runtime_error {
    return std::runtime_error("run state " + where.string() + ": " + what);
  };
  if (!fs::exists(meta_file)) {
    throw fail(meta_file, "not found: nothing to resume (run without --resume to start afresh)");
  }
  json meta;
  Position position;
  std::string name;
  try {
    std::ifstream in(meta_file);
    meta = json::parse(in);
    const std::string format = meta.value("format", "");
    if (format != kStateFormat) {
      throw std::runtime_error("format is '" + format + "', expected '" + kStateFormat +
                               "' (a state of another tram version: start the run afresh)");
    }
    (void)meta.at("bytes").get<uint64_t>();
    (void)meta.at("crc32").get<uint32_t>();
    position.step = meta.at("step").get<int64_t>();
    position.metrics_bytes = meta.at("metrics_bytes").get<uint64_t>();
    name = meta.at("file").get<std::string>();
    if (position.step < 0 || name != state_file_name(0, position.step)) {
      throw std::runtime_error("names the state file '" + name + "' for step " + std::to_string(position.step) +
                               ", expected '" + state_file_name(0, std::max<int64_t>(position.step, 0)) + "'");
    }
  } catch (const std::exception& error) {
    throw fail(meta_file, std::string("unreadable (corrupted?): ") + error.what());
  }
  for (const auto& [key, value] : settings_.items()) {
    if (!meta["settings"].contains(key) || meta["settings"][key] != value) {
      throw fail(meta_file, "written by a run with " + key + " = " +
                                (meta["settings"].contains(key) ? meta["settings"][key].dump() : "?") +
                                ", this run has " + value.dump() + "; resume with the same settings");
    }
  }
  const fs::path file = directory_ / name;
  if (!fs::exists(file)) throw fail(file, "missing (run.json describes it)");
  const auto [bytes, crc] = file_crc(file);
  if (bytes != meta["bytes"].get<uint64_t>()) {
    throw fail(file, std::to_string(bytes) + " bytes, expected " + meta["bytes"].dump() + " (truncated or overwritten)");
  }
  if (crc != meta["crc32"].get<uint32_t>()) {
    throw fail(file, "CRC-32 mismatch (corrupted): the file's contents changed after it was written");
  }
  try {
    tram::check_archive(file.string());
    torch::serialize::InputArchive archive;
    archive.load_from(file.string());
    torch::serialize::InputArchive model, state;
    archive.read("model", model);
    archive.read("optimizer", state);
    module.load(model);
    optimizer.load(state);
    if (read_integer(archive, "run/step") != position.step) {
      throw std::runtime_error("holds step " + std::to_string(read_integer(archive, "run/step")) +
                               ", run.json says " + std::to_string(position.step));
    }
    position.epoch = read_integer(archive, "run/epoch");
    position.index = read_integer(archive, "run/index");
    c10::IValue last_loss;
    archive.read("run/last_loss", last_loss);
    position.last_loss = last_loss.toDouble();
    if (options_.rank == 0) read_rng(archive, options_);
  } catch (const std::exception& error) {
    std::string what = error.what();
    if (const auto cut = what.find('\n'); cut != std::string::npos) what.resize(cut);
    throw fail(file, "cannot be loaded: " + what);
  }
  if (options_.rank != 0) {
    const fs::path rng = directory_ / state_file_name(options_.rank, position.step);
    try {
      tram::check_archive(rng.string());
      torch::serialize::InputArchive archive;
      archive.load_from(rng.string());
      read_rng(archive, options_);
    } catch (const std::exception& error) {
      std::string what = error.what();
      if (const auto cut = what.find('\n'); cut != std::string::npos) what.resize(cut);
      throw fail(rng, "cannot be loaded: " + what);
    }
  }
  saved_step_ = position.step;
  return position;
}

// This rank's state files other than `keep` and `also_keep`, and the temporary directories
// its killed writes left behind (write_file_atomically names them
// ".<file>.XXXXXX"). Each rank removes only its own files: the ranks share
// the directory, and another rank may be writing its own right now.
void RunState::remove_older_files(const std::string& keep, const std::string& also_keep) const {
  const std::string prefix = options_.rank == 0 ? "run" : "rng-rank" + std::to_string(options_.rank) + "-";
  std::vector<fs::path> files, temporaries;
  for (const auto& name : names_in(directory_)) {
    const fs::path path = directory_ / name;
    if (name.rfind("." + prefix, 0) == 0 && fs::is_directory(path)) temporaries.push_back(path);
    const bool state_file = name.rfind(options_.rank == 0 ? "run-" : prefix, 0) == 0 && name.size() > 3 &&
                            name.compare(name.size() - 3, 3, ".pt") == 0;
    if (state_file && name != keep && name != also_keep && fs::is_regular_file(path)) files.push_back(path);
  }
  // std::remove, not std::filesystem (see atomic_file.cpp).
  for (const auto& file : files) std::remove(file.c_str());
  for (const auto& directory : temporaries) {
    for (const auto& name : names_in(directory)) std::remove((directory / name).c_str());
    std::remove(directory.c_str());
  }
}

}  // namespace tram::hf::training
