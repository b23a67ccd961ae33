#include <tram/hf/training/trainer.h>

#include <tram/hf/atomic_file.h>
#include <tram/hf/data/split.h>

#include <tram/tram.h>

#include <ATen/Context.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/utils.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace tram::hf::training {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// 2: the state file is named after its step (run-<step>.pt) and run.json
// records the length of metrics.csv at the save.
constexpr const char* kStateFormat = "tram-run-state-2";

// Test-only: with TRAM_TEST_STALL=<point>@<step> in the environment, the run
// announces "tram-test-stall: <point>@<step>" on stderr when it reaches that
// point and then sleeps, so that a test can SIGKILL it exactly there
// (examples/tests/check_kill.py). The points:
//   step             step <step>'s metrics rows written (unflushed), no save yet
//   state-temporary  run-<step>.pt written to its temporary file, not renamed
//   state-between    run-<step>.pt in place, run.json still the previous state's
//   final            the final evaluation's rows flushed; checkpoint/ and
//                    summary.json not yet written
// Without the variable (any real run) this is one getenv per call.
void test_stall(const char* point, int64_t step) {
  const char* wanted = std::getenv("TRAM_TEST_STALL");
  if (wanted == nullptr || std::string(wanted) != std::string(point) + "@" + std::to_string(step)) return;
  std::cerr << "tram-test-stall: " << wanted << std::endl;
  std::this_thread::sleep_for(std::chrono::seconds(300));  // a test kills it long before
}

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

// What must match between the run that wrote a state and the one resuming it.
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

struct Position {
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t index = 0;  // within the epoch's shuffle
  uint64_t metrics_bytes = 0;  // the length of metrics.csv when the state was saved
  double last_loss = 0.0;      // of the last step taken: summary.json reports it
};

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

class RunState {
 public:
  RunState(const Options& options, json settings) : options_(options), settings_(std::move(settings)) {
    directory_ = options.out / "state";
  }

  void save(torch::nn::Module& module, const tram::SharpnessAware& optimizer, const Position& position) {
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

  Position load(torch::nn::Module& module, tram::SharpnessAware& optimizer) {
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

 private:
  // This rank's state files other than `keep` and `also_keep`, and the temporary directories
  // its killed writes left behind (write_file_atomically names them
  // ".<file>.XXXXXX"). Each rank removes only its own files: the ranks share
  // the directory, and another rank may be writing its own right now.
  void remove_older_files(const std::string& keep, const std::string& also_keep) const {
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

  const Options& options_;
  json settings_;
  fs::path directory_;
  int64_t saved_step_ = -1;  // the step of the state on disk, if this process wrote or read it
};

// metrics.csv: created afresh, or on resume cut back to its length when the
// resumed state was saved (run.json records it; the metrics are flushed
// before every save). Rows a killed run wrote after its last save, whole or
// half-written, are dropped and written again by the resumed run.
class MetricsFile {
 public:
  MetricsFile(const fs::path& file, bool enabled, std::optional<uint64_t> resume_bytes) : enabled_(enabled) {
    if (!enabled_) return;
    if (resume_bytes) {
      std::error_code error;
      const auto size = fs::file_size(file, error);
      if (error || size < *resume_bytes) {
        throw std::runtime_error(file.string() + ": " + (error ? "missing" : std::to_string(size) + " bytes") +
                                 ", but the run state was saved when it had " + std::to_string(*resume_bytes) +
                                 " bytes: it was cut or replaced since; start the run afresh (without --resume)");
      }
      if (::truncate(file.c_str(), static_cast<off_t>(*resume_bytes)) != 0) {
        throw std::runtime_error("cannot cut " + file.string() + " back to the resumed step's rows");
      }
      out_.open(file, std::ios::binary | std::ios::app);
      bytes_ = *resume_bytes;
    } else {
      out_.open(file, std::ios::binary | std::ios::trunc);
      write("step,split,metric,value\n");
    }
    if (!out_) throw std::runtime_error("cannot write " + file.string());
  }
  void row(int64_t step, const std::string& split, const std::string& metric, double value) {
    if (!enabled_) return;
    std::ostringstream line;
    line << std::setprecision(9) << step << "," << split << "," << metric << "," << value << "\n";
    write(line.str());
  }
  // Flushes and returns the file's length: what a state saved now records.
  uint64_t flush() {
    if (enabled_) out_.flush();
    if (enabled_ && !out_) throw std::runtime_error("metrics.csv: write failed");
    return bytes_;
  }

 private:
  void write(const std::string& text) {
    out_ << text;
    bytes_ += text.size();
  }

  bool enabled_;
  std::ofstream out_;
  uint64_t bytes_ = 0;
};

std::string format_metrics(const Metrics& metrics) {
  std::ostringstream text;
  text << std::setprecision(4);
  for (const auto& [name, value] : metrics) text << (text.tellp() > 0 ? " " : "") << name << " " << value;
  return text.str();
}

}  // namespace

LoopSummary run_steps(tram::SharpnessAware& optimizer, const Schedule& schedule, int64_t first, int64_t end,
                      const StepHooks& hooks, Progress& progress) {
  schedule.validate();
  const int64_t steps = schedule.total_steps;
  if (first < 0 || first > end || end > steps) {
    throw std::invalid_argument("run_steps: steps " + std::to_string(first) + " .. " + std::to_string(end) +
                                " are not within the schedule's 0 .. " + std::to_string(steps));
  }
  if (!hooks.batch) throw std::invalid_argument("run_steps: StepHooks::batch is required");
  const int64_t tail = std::max<int64_t>(1, steps / 10);
  double tail_loss = 0.0;
  LoopSummary summary;
  for (int64_t step = first; step < end; ++step) {
    const double lr = schedule.lr_at(step);
    set_learning_rate(optimizer, lr);
    const tram::StepReport report = optimizer.step(hooks.batch(step));
    summary.last_loss = report.loss;
    if (report.ascent_skipped) ++summary.skipped_ascents;
    summary.mean_radius += (report.radius.empty() ? 0.0 : report.radius.front()) / static_cast<double>(steps);
    summary.mean_distance += report.distance / static_cast<double>(steps);
    summary.mean_passes += static_cast<double>(report.passes) / static_cast<double>(steps);
    if (step >= steps - tail) tail_loss += report.loss;
    std::ostringstream shown;
    shown << "loss " << std::fixed << std::setprecision(4) << report.loss << " lr " << std::scientific
          << std::setprecision(2) << lr;
    progress.update(step + 1, hooks.items_per_step, shown.str());
    if (hooks.after_step) hooks.after_step(step, report, lr);
  }
  summary.tail_loss = tail_loss / static_cast<double>(tail);
  return summary;
}

int64_t total_steps(const Options& options, int64_t train_size) {
  if (options.steps > 0) return options.steps;
  const int64_t per_epoch = train_size / options.batch_size;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(options.epochs * static_cast<double>(per_epoch))));
}

uint64_t epoch_shuffle_seed(uint64_t seed, int64_t epoch) {
  // Runs with neighbouring seeds get unrelated orders: with a prime stride
  // above any epoch count, (seed, epoch) pairs never share a shuffle seed.
  constexpr uint64_t kSeedStride = 1000003;
  return seed * kSeedStride + static_cast<uint64_t>(epoch);
}

RunSummary train(Task& task, const Options& options) {
  const bool writer = options.rank == 0;
  auto module = task.module();
  const int64_t n = task.train_size();
  if (n < options.batch_size) {
    throw UsageError("the training set has " + std::to_string(n) + " examples, fewer than --batch-size " +
                     std::to_string(options.batch_size));
  }
  const int64_t total = total_steps(options, n);

  std::unique_ptr<tram::SharpnessAware> optimizer;
  try {
    optimizer = tram::make_optimizer(options.optimizer, module->parameters(), options.optimizer_option_map());
  } catch (const c10::Error& error) {
    throw UsageError(std::string("--optimizer ") + options.optimizer + ": " + error.what_without_backtrace());
  }
  optimizer->set_module(module);
  optimizer->set_gradient_accumulation(options.grad_accum);
  optimizer->set_max_grad_norm(options.max_grad_norm);

  Schedule schedule;
  schedule.kind = parse_schedule(options.schedule);
  schedule.peak_lr = options.lr;
  schedule.warmup_steps = options.resolved_warmup(total);
  schedule.total_steps = total;
  try {
    schedule.validate();
  } catch (const std::invalid_argument& error) {
    throw UsageError(error.what());
  }

  RunState state(options, run_settings(options, n, total));
  Position position;
  if (options.resume) position = state.load(*module, *optimizer);
  if (options.world_size > 1) {
    optimizer->set_process_group(tram::make_process_group(options.rendezvous, options.rank, options.world_size,
                                                          std::chrono::seconds(options.collective_timeout)));
  }

  if (writer) fs::create_directories(options.out);
  MetricsFile metrics(options.out / "metrics.csv", writer,
                      options.resume ? std::optional<uint64_t>(position.metrics_bytes) : std::nullopt);
  RunSummary summary;
  summary.steps = position.step;
  summary.last_loss = position.last_loss;
  const auto names = task.eval_names();
  auto evaluate = [&](int64_t step) {
    if (!writer) return;
    for (size_t i = 0; i < names.size(); ++i) {
      Metrics result = task.evaluate(i, options.eval_batch_size);
      for (const auto& [metric, value] : result) metrics.row(step, names[i], metric, value);
      if (!options.quiet) std::cerr << "[step " << step << "] " << names[i] << ": " << format_metrics(result) << "\n";
      summary.eval[names[i]] = std::move(result);
    }
    metrics.flush();
  };
  if (!options.resume) evaluate(0);

  std::ostream null_stream(nullptr);
  const auto [unit, per_example] = task.unit();
  Progress progress(std::string(program_name(options.program)) + " " + options.optimizer, total, unit,
                    writer && !options.quiet ? std::cerr : null_stream);
  progress.update(position.step, 0, "");

  const int64_t per_rank = options.batch_size / options.world_size;
  const int64_t micro = per_rank / options.grad_accum;
  std::vector<int64_t> order = data::permutation(n, epoch_shuffle_seed(options.seed, position.epoch));
  std::vector<std::vector<int64_t>> micro_batches;
  const int64_t stop = options.stop_after ? std::min(total, *options.stop_after) : total;
  bool saved = false;
  StepHooks hooks;
  hooks.items_per_step = options.batch_size * per_example;
  hooks.batch = [&](int64_t) {
    if (position.index + options.batch_size > n) {
      ++position.epoch;
      position.index = 0;
      order = data::permutation(n, epoch_shuffle_seed(options.seed, position.epoch));
    }
    const auto shard = order.begin() + position.index + options.rank * per_rank;
    micro_batches.clear();
    for (int64_t m = 0; m < options.grad_accum; ++m) micro_batches.emplace_back(shard + m * micro, shard + (m + 1) * micro);
    return tram::ForwardClosure([&](const tram::Pass& pass) {
      return task.forward(micro_batches.at(static_cast<size_t>(pass.micro_batch())), pass);
    });
  };
  hooks.after_step = [&](int64_t step, const tram::StepReport& report, double lr) {
    position.index += options.batch_size;
    position.step = step + 1;
    summary.steps = position.step;
    summary.last_loss = position.last_loss = report.loss;
    metrics.row(position.step, "train", "loss", report.loss);
    metrics.row(position.step, "train", "lr", lr);
    if (report.distance != 0.0) metrics.row(position.step, "train", "distance", report.distance);
    test_stall("step", position.step);
    saved = false;
    if (options.eval_every > 0 && position.step % options.eval_every == 0 && position.step < total) {
      evaluate(position.step);
    }
    if (options.save_every > 0 && position.step % options.save_every == 0) {
      position.metrics_bytes = metrics.flush();
      state.save(*module, *optimizer, position);
      saved = true;
    }
  };
  run_steps(*optimizer, schedule, position.step, stop, hooks, progress);
  position.metrics_bytes = metrics.flush();
  progress.finish(position.step < total ? "stopped at step " + std::to_string(position.step) : "");
  if (!saved) state.save(*module, *optimizer, position);
  if (position.step < total) return summary;  // --stop-after: resume later

  evaluate(position.step);
  test_stall("final", position.step);
  if (writer) {
    task.save_pretrained(options.out / "checkpoint");
    json eval = json::object();
    for (const auto& [name, result] : summary.eval) {
      for (const auto& [metric, value] : result) eval[name][metric] = value;
    }
    json out = {{"program", program_name(options.program)},
                {"model", options.model.string()},
                {"optimizer", options.optimizer},
                {"optimizer_options", options.optimizer_options},
                {"lr", options.lr},
                {"schedule", options.schedule},
                {"warmup_steps", schedule.warmup_steps},
                {"steps", position.step},
                {"batch_size", options.batch_size},
                {"grad_accum", options.grad_accum},
                {"world_size", options.world_size},
                {"seed", options.seed},
                {"train_examples", n},
                {"last_train_loss", summary.last_loss},
                {"elapsed_seconds", progress.elapsed_seconds()},
                {"eval", eval}};
    write_text_atomically(options.out / "summary.json", out.dump(2) + "\n");
  }
  return summary;
}

}  // namespace tram::hf::training
