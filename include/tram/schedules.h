// Schedules of the sharpness-aware radius, stepped like an LR scheduler.
//
//   tram::ProportionalRadius radius(optimizer, /*rho_max=*/0.1, /*rho_min=*/0.01,
//                                   /*lr_max=*/1e-3, /*lr_min=*/0.0);
//   for (...) { optimizer.step(closure); lr_scheduler.step(); radius.step(); }
#pragma once

#include <tram/optimizer.h>

namespace tram {

// GSAM's proportion scheduler (Zhuang et al. 2022; docs/ALGORITHMS.md §3): the
// radius follows the learning rate of the base's group 0,
//   rho = rho_min + (rho_max - rho_min) (lr - lr_min) / (lr_max - lr_min),
// written into every group's rho by step() (call it after the LR scheduler's
// step). With lr_max == lr_min the radius is rho_max. Only for methods with a
// fixed radius: a trust-region radius comes from d, not from rho.
class ProportionalRadius {
 public:
  ProportionalRadius(SharpnessAware& optimizer, double rho_max, double rho_min, double lr_max, double lr_min);
  // Sets every group's rho from the current learning rate and returns it.
  double step();

 private:
  SharpnessAware& optimizer_;
  double rho_max_, rho_min_, lr_max_, lr_min_;
};

}  // namespace tram
