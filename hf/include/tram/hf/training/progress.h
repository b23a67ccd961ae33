// Progress of a training run: on a terminal, one bar redrawn in place with
// step, the caller's metrics (loss, learning rate, ...), throughput and ETA;
// elsewhere (CI logs, files, pipes) plain lines at every tenth of the run, so
// a log stays readable and short.
//
//   Progress progress("fine-tune sam", steps, "examples");
//   for (int64_t step = 0; step < steps; ++step) {
//     ...
//     progress.update(step + 1, batch_size, "loss 2.31 lr 2.0e-05");
//   }
//   progress.finish("eval accuracy 0.913");
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>

namespace tram::hf::training {

class Progress {
 public:
  // `unit` names what update() counts for the throughput ("examples",
  // "tokens"). `interactive`: draw a bar (default: whether `out` is std::cerr
  // or std::cout and that stream is a terminal).
  Progress(std::string label, int64_t total_steps, std::string unit, std::ostream& out,
           std::optional<bool> interactive = std::nullopt);
  Progress(std::string label, int64_t total_steps, std::string unit = "examples");

  // `done` steps finished of total_steps; `items` processed by the latest
  // step(s) since the previous update; `metrics` shown as they are. A run
  // resumed at step k starts with update(k, 0, ...) so that its throughput
  // and ETA count only the steps it runs.
  void update(int64_t done, int64_t items, const std::string& metrics);
  // Ends the bar's line (or prints the final plain line) with `summary`.
  void finish(const std::string& summary = "");

  double elapsed_seconds() const;
  bool interactive() const { return interactive_; }

  // "1:02:03", "4:05" or "7s": durations for ETAs and logs.
  static std::string format_duration(double seconds);

 private:
  std::string line(int64_t done, const std::string& metrics, bool with_bar) const;

  std::string label_;
  int64_t total_;
  std::string unit_;
  std::ostream& out_;
  bool interactive_;
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_;
  std::optional<int64_t> first_done_;  // the step this process started counting at
  Clock::time_point first_time_;
  Clock::time_point last_draw_;
  int64_t items_ = 0;
  int64_t done_ = 0;
  int64_t next_plain_ = 0;  // the next step at which a plain line is due
  std::string metrics_;
  bool finished_ = false;
};

}  // namespace tram::hf::training
