// Learning-rate schedules of the examples and the study (docs/ALGORITHMS.md §10): polynomial
// decay with linear warm-up (the language experiments) and cosine decay (the
// vision experiments), with Hugging Face's formulas
// (get_polynomial_decay_schedule_with_warmup, get_cosine_schedule_with_warmup),
// so that a run here and a run with transformers' Trainer use the same rates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace tram::hf::training {

enum class ScheduleKind {
  kConstant,     // "constant": peak_lr after the warm-up
  kPolynomial,   // "poly-warmup": (peak - end) * (1 - progress)^power + end
  kCosine,       // "cosine": peak * 0.5 * (1 + cos(pi * progress))
};

// The names accepted on command lines, in the order of ScheduleKind.
const std::vector<std::string>& schedule_names();
// Throws std::invalid_argument listing the valid names.
ScheduleKind parse_schedule(const std::string& name);
const char* to_string(ScheduleKind kind);

struct Schedule {
  ScheduleKind kind = ScheduleKind::kPolynomial;
  double peak_lr = 2e-5;
  int64_t warmup_steps = 0;  // linear from 0 to peak_lr over these steps
  int64_t total_steps = 1;   // progress = (step - warmup) / (total - warmup)
  double end_lr = 1e-7;      // polynomial only (Hugging Face's lr_end)
  double power = 1.0;        // polynomial only

  // The rate for optimizer step `step` (0-based): what the step uses.
  double lr_at(int64_t step) const;
  // Throws std::invalid_argument naming the field for a schedule that cannot
  // run (negative rates, warm-up longer than the run, ...).
  void validate() const;
};

// Sets the learning rate of every parameter group of `optimizer` (a tram
// optimizer forwards it to its base optimizer's groups).
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace tram::hf::training
