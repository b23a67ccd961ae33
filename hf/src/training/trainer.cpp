#include <tram/hf/training/trainer.h>

#include <tram/hf/atomic_file.h>
#include <tram/hf/data/split.h>
#include <tram/hf/training/run_state.h>

#include <tram/tram.h>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/utils.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace tram::hf::training {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

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
