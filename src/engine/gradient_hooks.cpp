// The gradient hooks every step form goes through (docs/ALGORITHMS.md §8):
// the all-reduce over data-parallel ranks, loss-scaler unscaling with the
// inf/NaN check, descent-gradient clipping, then the base step or the skip.
#include <tram/optimizer.h>

#include "collectives.h"
#include "engine/managed.h"
#include "engine/parameter_sets.h"
#include "engine/rule_state.h"

#include <ATen/record_function.h>
#include <torch/autograd.h>

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <cmath>

namespace tram {

using torch::Tensor;

namespace {
// torch::nn::utils::clip_grad_norm_ (2-norm) without its final read of the
// total norm to the host, which tram does not report: the same operations,
// so the same gradients bit for bit, and no synchronisation.
void clip_gradient_norm(const std::vector<Tensor>& params, double max_norm) {
  std::vector<Tensor> norms;
  for (const auto& p : params) {
    if (p.grad().defined()) norms.push_back(p.grad().data().norm(2.0));
  }
  if (norms.empty()) return;
  const Tensor total = norms.size() == 1 ? norms[0] : torch::stack(norms).norm(2.0);
  const Tensor coef = torch::clamp(max_norm / (total + 1e-6), std::nullopt, 1.0);
  for (const auto& p : params) {
    if (p.grad().defined()) p.grad().data().mul_(coef);
  }
}
}  // namespace

// ---------------------------------------------------------------------------

void SharpnessAware::set_gradient_accumulation(int64_t micro_batches) {
  TORCH_CHECK(micro_batches >= 1, method_.name(), ": invalid gradient accumulation: ", micro_batches,
              " micro-batches (must be >= 1)");
  micro_batches_ = micro_batches;
}

void SharpnessAware::set_max_grad_norm(std::optional<double> max_norm) {
  TORCH_CHECK(!max_norm || (*max_norm > 0 && std::isfinite(*max_norm)), method_.name(),
              ": invalid max_grad_norm: ", max_norm.value_or(0), " (must be a positive number, or unset)");
  max_grad_norm_ = max_norm;
}

void SharpnessAware::set_process_group(c10::intrusive_ptr<c10d::Backend> group, AscentScope scope) {
  process_group_ = std::move(group);
  ascent_scope_ = scope;
  if (!process_group_) return;
  // Every rank starts from rank 0's parameters and parameter-set buffers.
  std::vector<Tensor> tensors = managed_parameters(false).params;
  const auto sets = sets_->tensors();
  tensors.insert(tensors.end(), sets.begin(), sets.end());
  detail::broadcast(*process_group_, method_.name(), tensors);
}

Tensor SharpnessAware::prepare_ascent_gradient() {
  RECORD_USER_SCOPE("tram::ascent_gradient");
  auto grads = managed_parameters(true).grads;
  if (process_group_ && ascent_scope_ == AscentScope::kGlobal) {
    detail::all_reduce_mean(*process_group_, method_.name(), grads);
  }
  if (!scaler_) return {};
  const auto device = grads.empty() ? torch::Device(torch::kCPU) : grads[0].device();
  Tensor found = scaler_->unscale_unread(grads);
  found = found.defined() ? found.to(torch::kFloat64).reshape({1})
                          : torch::zeros({1}, torch::TensorOptions(torch::kFloat64).device(device));
  if (process_group_ && ascent_scope_ == AscentScope::kPerRank) {
    // Each rank checked its own gradient; all must agree to skip. Summed on
    // the device: ascend() reads the sum with its other values.
    detail::all_reduce_sum(*process_group_, method_.name(), "inf/NaN all-reduce", found);
  }
  return found;
}

bool SharpnessAware::prepare_descent_gradient() {
  RECORD_USER_SCOPE("tram::descent_gradient");
  auto grads = managed_parameters(true).grads;
  if (process_group_) detail::all_reduce_mean(*process_group_, method_.name(), grads);
  if (scaler_ && scaler_->unscale(grads)) return false;
  if (const auto* rule = rules_->rule(); rule && !rules_->ascent_skipped()) {
    // The rule's descent gradient, from gradients every rank agrees on: with
    // a per-rank ascent, pass 1's kept g is averaged here first.
    torch::NoGradGuard no_grad;
    if (process_group_ && ascent_scope_ == AscentScope::kPerRank && rules_->ascended()) {
      auto kept = rules_->kept_first_gradient();
      detail::all_reduce_mean(*process_group_, method_.name(), kept);
    }
    auto step = gradient_step(managed_parameters(true));
    if (rules_->ascended()) {
      step.first = rules_->first_gradient(step.grads, step.index);
      rule->descent(step);
    } else {
      rule->descent_without_ascent(step);
    }
  }
  if (max_grad_norm_) {
    torch::NoGradGuard no_grad;
    clip_gradient_norm(managed_parameters(true).params, *max_grad_norm_);
  }
  return true;
}

void SharpnessAware::descend(StepReport& report) {
  if (!prepare_descent_gradient()) {
    skip_step(report);
    return;
  }
  base_step();
  last_step_ = report;
}

void SharpnessAware::skip_step(StepReport& report) {
  restore();
  zero_grad();
  if (scaler_) scaler_->update(/*found_inf=*/true);
  ++skipped_steps_;
  report.step_skipped = true;
  last_step_ = report;
}

}  // namespace tram
