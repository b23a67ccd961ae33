#include <tram/hf/training/schedule.h>

#include <torch/optim/optimizer.h>

#include <cmath>
#include <stdexcept>

namespace tram::hf::training {

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names = {"constant", "poly-warmup", "cosine"};
  return names;
}

const char* to_string(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kConstant: return "constant";
    case ScheduleKind::kPolynomial: return "poly-warmup";
    case ScheduleKind::kCosine: return "cosine";
  }
  return "?";
}

ScheduleKind parse_schedule(const std::string& name) {
  const auto& names = schedule_names();
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return static_cast<ScheduleKind>(i);
  }
  std::string valid;
  for (const auto& n : names) valid += (valid.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown schedule '" + name + "'; valid: " + valid);
}

void Schedule::validate() const {
  auto fail = [](const std::string& what) { throw std::invalid_argument("schedule: " + what); };
  if (!(peak_lr >= 0.0) || !std::isfinite(peak_lr)) fail("the learning rate must be finite and >= 0");
  if (total_steps < 1) fail("total_steps must be >= 1, got " + std::to_string(total_steps));
  if (warmup_steps < 0 || warmup_steps > total_steps) {
    fail("warmup_steps must be in [0, total_steps = " + std::to_string(total_steps) + "], got " +
         std::to_string(warmup_steps));
  }
  if (kind == ScheduleKind::kPolynomial && !(end_lr >= 0.0 && end_lr <= peak_lr)) {
    fail("end_lr must be in [0, peak_lr]");
  }
  if (!(power > 0.0)) fail("power must be > 0");
}

double Schedule::lr_at(int64_t step) const {
  if (step < warmup_steps) return peak_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (kind == ScheduleKind::kConstant) return peak_lr;
  const int64_t decay_steps = total_steps - warmup_steps;
  const double progress =
      decay_steps <= 0 ? 1.0 : std::min(1.0, static_cast<double>(step - warmup_steps) / decay_steps);
  if (kind == ScheduleKind::kCosine) return peak_lr * 0.5 * (1.0 + std::cos(M_PI * progress));
  return (peak_lr - end_lr) * std::pow(1.0 - progress, power) + end_lr;
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace tram::hf::training
