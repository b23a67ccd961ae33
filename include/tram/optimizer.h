// The engine: one two-phase step shared by every method (docs/ALGORITHMS.md §1).
//
//   pass 1 at w            -> g                      (closure)
//   ascent                 -> w <- w + e(g, radius)  (exact copy of w kept)
//   pass 2 at w + e        -> g'                     (closure)
//   exact restore of w, then the base optimizer steps with g'.
//
// Methods differ only in the policies of MethodConfig (method.h): the ascent
// direction, where the radius comes from (with its trust-region target and
// distance) and the regularizer. The engine asks them; it never asks which
// kind they are.
#pragma once

#include <tram/closure.h>
#include <tram/grad_scaler.h>
#include <tram/method.h>
#include <tram/options.h>

#include <c10/util/intrusive_ptr.h>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace c10d {
class Backend;
}

namespace tram {

namespace detail {
class ParameterSets;
class RuleState;
class StepPasses;
}  // namespace detail

// With data-parallel training, which gradient the ascent uses.
enum class AscentScope {
  kGlobal,   // the first-pass gradient averaged over ranks (every rank takes the same ascent)
  kPerRank,  // each rank's own gradient (m-sharpness, Foret et al. 2021): no all-reduce of pass 1
};

class SharpnessAware : public torch::optim::Optimizer {
 public:
  // Wraps `base` (SGD, Adam, AdamW, or any torch::optim::Optimizer). The tram
  // optimizer mirrors the base's parameter groups, one GroupOptions each
  // (initialised from `defaults`; change them with group_options(i)). Add
  // groups to the base, not to this wrapper: new base groups are picked up at
  // the next step with the default options.
  SharpnessAware(std::shared_ptr<torch::optim::Optimizer> base, MethodConfig method,
                 GroupOptions defaults = GroupOptions());

  // --- one call per step -----------------------------------------------------

  // The LibTorch closure: it zeroes the gradients, runs forward and backward
  // and returns the loss. Called twice (at w and at w + e), or once for a
  // method without ascent. Methods that need logits (TRAM, the regularizers)
  // require the ForwardClosure overload and say so. Returns the loss of pass 1.
  torch::Tensor step(LossClosure closure) override;

  // The forward closure: it returns the loss and logits of one pass and does
  // not call backward. Every method works with it.
  StepReport step(const ForwardClosure& closure);

  // --- two calls per step, for loops that need control between the passes ---
  //
  //   loss(w).backward();  opt.first_step();      // w <- w + e
  //   opt.zero_grad(); loss(w + e).backward();  opt.second_step();  // restore, base step
  //
  // A trust-region method needs the distance d of this step; everything that
  // needs target passes (θt-1, θ0, EMA) is only available through step().
  void first_step(std::optional<double> trust_region_distance = std::nullopt);
  void second_step();
  // Puts w back if it is perturbed (idempotent). second_step() and a throwing
  // step() call it; a two-call loop that abandons a step should too.
  void restore();
  bool perturbed() const;

  // --- configuration and state ---------------------------------------------
  GroupOptions& group_options(std::size_t group);
  const MethodConfig& method() const { return method_; }
  torch::optim::Optimizer& base() { return *base_; }
  const torch::optim::Optimizer& base() const { return *base_; }

  // Target passes then run in eval mode, and passes other than pass 1 leave
  // the module's buffers (BatchNorm running statistics) as pass 1 left them.
  void set_module(std::shared_ptr<torch::nn::Module> module) { module_ = std::move(module); }
  void set_noise_sampler(NoiseSampler sampler);

  // --- training at scale ------------------------------------------------------

  // step(ForwardClosure) runs every pass over `micro_batches` micro-batches
  // (Pass::micro_batch() says which), accumulating the gradients of each pass
  // with weight 1/micro_batches: the ascent uses the accumulated first-pass
  // gradient, the descent gradient is accumulated at w + e, and the targets
  // see the same micro-batches. Equal micro-batch sizes give exactly the step
  // on the concatenated batch (the trust-region distance is exact for any sizes).
  void set_gradient_accumulation(int64_t micro_batches);
  int64_t gradient_accumulation() const { return micro_batches_; }

  // Clips the descent gradient (the one the base optimizer uses) to this
  // global L2 norm before the base step; std::nullopt (default) disables it.
  void set_max_grad_norm(std::optional<double> max_norm);

  // fp16 dynamic loss scaling (see grad_scaler.h); nullptr detaches it.
  void set_grad_scaler(std::shared_ptr<GradScaler> scaler) { scaler_ = std::move(scaler); }
  const std::shared_ptr<GradScaler>& grad_scaler() const { return scaler_; }

  // Data-parallel training over a c10d backend (Gloo on CPU, NCCL on GPU;
  // tram::make_process_group in distributed.h makes one): gradients of both passes are averaged over ranks (pass 1 only with
  // AscentScope::kGlobal) and the trust-region distance too, so every rank
  // takes the same step. Broadcasts rank 0's parameters (and parameter-set
  // buffers) when attached. Collective timeouts are the process group's.
  void set_process_group(c10::intrusive_ptr<c10d::Backend> group,
                         AscentScope scope = AscentScope::kGlobal);

  int64_t step_count() const { return step_count_; }
  int64_t skipped_ascents() const { return skipped_ascents_; }
  // Steps skipped because loss scaling found inf/NaN in a pass.
  int64_t skipped_steps() const { return skipped_steps_; }
  const StepReport& last_step() const { return last_step_; }

  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  ~SharpnessAware() override;

 private:
  struct Managed;  // the parameters of one step, with their per-tensor options
  struct AscentInputs;  // what the ascent takes from the phases before it, unread
  // perturbed_groups_only: leave out the groups with perturb = false (SAM-ON).
  Managed managed_parameters(bool with_grad_only, bool perturbed_groups_only = false) const;
  std::vector<const GroupOptions*> group_option_list() const;
  void sync_groups();
  void validate() const;

  // The phases of step(ForwardClosure), in order.
  void run_reference_passes(detail::StepPasses& passes, bool ascending);
  std::vector<PassOutput> run_first_pass(detail::StepPasses& passes, bool ascending, StepReport& report);
  // This batch's trust-region distance d, on the device (undefined for a
  // fixed radius).
  torch::Tensor measure_distance(detail::StepPasses& passes, const std::vector<PassOutput>& first);
  // ESAM's data selection, between the ascent and pass 2.
  void select_rows(detail::StepPasses& passes, const std::vector<PassOutput>& first);
  // ESAM without per-row losses (a LossClosure, the two-call API, or a forward
  // closure that returns none): says once that only SWP runs.
  void warn_without_row_losses();
  void run_second_pass(detail::StepPasses& passes, StepReport& report);
  // The loss of a pass with the method's regularizer added, and the penalty R
  // (undefined without a regularizer).
  std::pair<torch::Tensor, torch::Tensor> regularized(detail::StepPasses& passes, const PassOutput& out,
                                                      int64_t micro_batch, bool perturbed) const;

  // Reads what the ascent decides with (the inf/NaN flag, d, ||T g||) to the
  // host, in one read where no gradient rule needs the radius first; then
  // computes e from the current gradients and moves w to w + e, keeping the
  // exact copy of w (docs/ALGORITHMS.md §1, §15). Returns false, leaving w
  // as it was, when the loss scaler found a non-finite gradient.
  bool ascend(const AscentInputs& inputs, StepReport& report);
  // The gradients of `managed` as the method's gradient rule sees them.
  policy::GradientStep gradient_step(const Managed& managed);
  void base_step();
  // The gradient hooks every step form goes through: all-reduce over ranks,
  // unscale and inf/NaN check, clipping. The ascent's returns the loss
  // scaler's inf/NaN flag unread (undefined without a scaler), for ascend()
  // to read with its other values; the descent's returns false when loss
  // scaling found a non-finite gradient (the step is then skipped).
  torch::Tensor prepare_ascent_gradient();
  bool prepare_descent_gradient();
  // The descent gradient's hooks, then the base step (or the skip).
  void descend(StepReport& report);
  // Abandons the step after a non-finite scaled gradient: restores w, backs
  // the scale off, counts it.
  void skip_step(StepReport& report);

  std::shared_ptr<torch::optim::Optimizer> base_;
  MethodConfig method_;
  std::shared_ptr<torch::nn::Module> module_;
  NoiseSampler noise_sampler_;
  // Every parameter-sized buffer: the restore copy and the parameter sets
  // (θt-1, θ0, EMA) the method's policies evaluate the model at.
  std::unique_ptr<detail::ParameterSets> sets_;
  // The gradient rule's buffers and the kind of the current step.
  std::unique_ptr<detail::RuleState> rules_;

  int64_t micro_batches_ = 1;
  std::optional<double> max_grad_norm_;
  std::shared_ptr<GradScaler> scaler_;
  c10::intrusive_ptr<c10d::Backend> process_group_;
  AscentScope ascent_scope_ = AscentScope::kGlobal;

  int64_t step_count_ = 0;
  int64_t skipped_ascents_ = 0;
  int64_t skipped_steps_ = 0;
  StepReport last_step_;
};

}  // namespace tram
