#include <tram/hf/training/progress.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace tram::hf::training {

namespace {

bool is_terminal(const std::ostream& out) {
  if (&out == &std::cerr || &out == &std::clog) return ::isatty(STDERR_FILENO) != 0;
  if (&out == &std::cout) return ::isatty(STDOUT_FILENO) != 0;
  return false;
}

// Plain lines are printed at every tenth of the run (and at its end).
int64_t plain_interval(int64_t total) { return std::max<int64_t>(1, (total + 9) / 10); }

}  // namespace

Progress::Progress(std::string label, int64_t total_steps, std::string unit, std::ostream& out,
                   std::optional<bool> interactive)
    : label_(std::move(label)), total_(std::max<int64_t>(total_steps, 0)), unit_(std::move(unit)), out_(out),
      interactive_(interactive.value_or(is_terminal(out))), start_(Clock::now()), first_time_(start_),
      last_draw_(start_ - std::chrono::seconds(1)) {}

Progress::Progress(std::string label, int64_t total_steps, std::string unit)
    : Progress(std::move(label), total_steps, std::move(unit), std::cerr) {}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto total = static_cast<int64_t>(std::llround(seconds));
  const int64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  char buffer[32];
  if (h > 0) std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", (long long)h, (long long)m, (long long)s);
  else if (m > 0) std::snprintf(buffer, sizeof buffer, "%lld:%02lld", (long long)m, (long long)s);
  else std::snprintf(buffer, sizeof buffer, "%llds", (long long)s);
  return buffer;
}

std::string Progress::line(int64_t done, const std::string& metrics, bool with_bar) const {
  std::ostringstream text;
  text << label_ << " ";
  if (with_bar) {
    constexpr int kWidth = 24;
    const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : kWidth;
    text << "[" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] ";
  }
  text << "step " << done << "/" << total_;
  if (!metrics.empty()) text << " | " << metrics;
  const double seconds = std::chrono::duration<double>(Clock::now() - first_time_).count();
  const int64_t counted = done - first_done_.value_or(done);
  if (seconds > 0 && counted > 0) {
    text << " | " << std::setprecision(3) << static_cast<double>(items_) / seconds << " " << unit_ << "/s";
    if (done < total_) text << " | ETA " << format_duration(seconds / counted * (total_ - done));
  }
  text << " | " << format_duration(elapsed_seconds());
  return text.str();
}

void Progress::update(int64_t done, int64_t items, const std::string& metrics) {
  if (!first_done_) {
    first_done_ = done - (items > 0 ? 1 : 0);  // this update's step counts when it carried items
    first_time_ = items > 0 ? start_ : Clock::now();
  }
  items_ += items;
  done_ = done;
  metrics_ = metrics;
  const auto now = Clock::now();
  if (interactive_) {
    // Redraw at most 10 times a second: drawing must not cost training time.
    if (now - last_draw_ < std::chrono::milliseconds(100) && done < total_) return;
    last_draw_ = now;
    out_ << "\r\033[K" << line(done, metrics, true) << std::flush;
  } else if (done >= next_plain_ || done >= total_) {
    out_ << line(done, metrics, false) << "\n" << std::flush;
    next_plain_ = (done / plain_interval(total_) + 1) * plain_interval(total_);
  }
}

void Progress::finish(const std::string& summary) {
  if (finished_) return;
  finished_ = true;
  const std::string tail = summary.empty() ? "" : " | " + summary;
  if (interactive_) {
    out_ << "\r\033[K" << line(done_, metrics_, true) << tail << "\n" << std::flush;
  } else {
    out_ << label_ << " done: " << done_ << "/" << total_ << " steps in " << format_duration(elapsed_seconds())
         << tail << "\n"
         << std::flush;
  }
}

}  // namespace tram::hf::training
