#include <tram/hf/training/run_state.h>

#include <tram/hf/atomic_file.h>

#include <tram/tram.h>

#include <ATen/Context.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <zlib.h>

#include <fstream>
#include <stdexcept>
#include <vector>

namespace tram::hf::training {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kStateFormat = "tram-run-state-1";

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

void save_archive(torch::serialize::OutputArchive& archive, const fs::path& file) {
  write_file_atomically(file, [&](const fs::path& temporary) { archive.save_to(temporary.string()); });
}

int64_t read_integer(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  archive.read(key, value);
  return value.toInt();
}

}  // namespace

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

void RunState::save(torch::nn::Module& module, const tram::SharpnessAware& optimizer, const Position& position) const {
  fs::create_directories(directory_);
  if (options_.rank != 0) {
    torch::serialize::OutputArchive archive;
    write_rng(archive, options_);
    save_archive(archive, directory_ / ("rng-rank" + std::to_string(options_.rank) + ".pt"));
    return;
  }
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive model(archive.compilation_unit()), state(archive.compilation_unit());
  module.save(model);
  optimizer.save(state);
  archive.write("model", model);
  archive.write("optimizer", state);
  archive.write("run/step", c10::IValue(position.step));
  archive.write("run/epoch", c10::IValue(position.epoch));
  archive.write("run/index", c10::IValue(position.index));
  write_rng(archive, options_);
  const fs::path file = directory_ / "run.pt";
  save_archive(archive, file);
  const auto [bytes, crc] = file_crc(file);
  json meta = {{"format", kStateFormat},
               {"file", "run.pt"},
               {"bytes", bytes},
               {"crc32", crc},
               {"step", position.step},
               {"epoch", position.epoch},
               {"index", position.index},
               {"settings", settings_}};
  write_text_atomically(directory_ / "run.json", meta.dump(2) + "\n");
}

Position RunState::load(torch::nn::Module& module, tram::SharpnessAware& optimizer) const {
  const fs::path meta_file = directory_ / "run.json", file = directory_ / "run.pt";
  auto fail = [](const fs::path& where, const std::string& what) -> std::runtime_error {
    return std::runtime_error("run state " + where.string() + ": " + what);
  };
  if (!fs::exists(meta_file)) {
    throw fail(meta_file, "not found: nothing to resume (run without --resume to start afresh)");
  }
  json meta;
  try {
    std::ifstream in(meta_file);
    meta = json::parse(in);
    if (meta.value("format", "") != kStateFormat) {
      throw std::runtime_error("format is '" + meta.value("format", "") + "', expected '" + kStateFormat + "'");
    }
    (void)meta.at("bytes").get<uint64_t>();
    (void)meta.at("crc32").get<uint32_t>();
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
  if (!fs::exists(file)) throw fail(file, "missing (run.json describes it)");
  const auto [bytes, crc] = file_crc(file);
  if (bytes != meta["bytes"].get<uint64_t>()) {
    throw fail(file, std::to_string(bytes) + " bytes, expected " + meta["bytes"].dump() + " (truncated or overwritten)");
  }
  if (crc != meta["crc32"].get<uint32_t>()) {
    throw fail(file, "CRC-32 mismatch (corrupted): the file's contents changed after it was written");
  }
  Position position;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(file.string());
    torch::serialize::InputArchive model, state;
    archive.read("model", model);
    archive.read("optimizer", state);
    module.load(model);
    optimizer.load(state);
    position.step = read_integer(archive, "run/step");
    position.epoch = read_integer(archive, "run/epoch");
    position.index = read_integer(archive, "run/index");
    if (options_.rank == 0) read_rng(archive, options_);
  } catch (const std::exception& error) {
    std::string what = error.what();
    if (const auto cut = what.find('\n'); cut != std::string::npos) what.resize(cut);
    throw fail(file, "cannot be loaded: " + what);
  }
  if (options_.rank != 0) {
    const fs::path rng = directory_ / ("rng-rank" + std::to_string(options_.rank) + ".pt");
    try {
      torch::serialize::InputArchive archive;
      archive.load_from(rng.string());
      read_rng(archive, options_);
    } catch (const std::exception& error) {
      std::string what = error.what();
      if (const auto cut = what.find('\n'); cut != std::string::npos) what.resize(cut);
      throw fail(rng, "cannot be loaded: " + what);
    }
  }
  return position;
}

}  // namespace tram::hf::training
