// The policies a method is composed of (docs/ALGORITHMS.md §1-7).
//
// The engine (SharpnessAware) runs the phases of the step — reference passes,
// pass 1, radius, ascent, pass 2, exact restore, base step — and asks the
// method's policies at each phase; it never asks which kind a policy is.
// A new direction, target, distance or regularizer is one class implementing
// one of these interfaces (src/policies/ holds one file per policy), one line
// in policies.h that makes it, and the line that names it (src/methods.cpp).
//
// Policies are immutable once built and shared between optimizers; what
// changes during training lives in the engine's one owner of parameter-sized
// buffers (the ParameterSets a target or regularizer asks for) or in the step.
#pragma once

#include <tram/closure.h>
#include <tram/ops.h>
#include <tram/options.h>

#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tram::policy {

// ---------------------------------------------------------------------------
// What the engine offers policies during step(ForwardClosure).
// ---------------------------------------------------------------------------
class Passes {
 public:
  virtual ~Passes() = default;
  // Gradient accumulation: every pass runs once per micro-batch.
  virtual int64_t micro_batches() const = 0;
  // Runs one forward pass of the user's closure (counted in StepReport::passes).
  // kTarget passes run under no-grad with the module in eval mode; passes with
  // gradient leave the module's buffers as pass 1 left them.
  virtual PassOutput run(PassKind kind, std::optional<NoiseOptions> noise, int64_t micro_batch) = 0;
  // The logits of the model at parameter set `name` (ParameterSet::name()) on
  // micro-batch `micro_batch`: the engine runs one target pass per set and
  // micro-batch before pass 1.
  virtual const torch::Tensor& logits_at(const std::string& name, int64_t micro_batch) const = 0;
  // Per-step storage for what a policy computes before pass 1 and reads later
  // in the same step (e.g. TRAM-ε's noised target logits), under its own key.
  virtual std::vector<torch::Tensor>& scratch(const std::string& key) = 0;
};

// ---------------------------------------------------------------------------
// Parameter sets: copies of the managed parameters that a target or a
// regularizer evaluates the model at. The engine's owner of parameter-sized
// buffers keeps one buffer per distinct name, initialised to θ0 (the
// parameters at construction), saved and loaded with the optimizer.
// ---------------------------------------------------------------------------
class ParameterSet {
 public:
  virtual ~ParameterSet() = default;
  // Identity and checkpoint key ("previous", "pretrained", "ema"): policies
  // that ask for the same name share one buffer and one target pass per step.
  virtual std::string name() const = 0;
  // θt-1 (docs/ALGORITHMS.md §4): the set is swapped into w for its pass and
  // then holds w exactly, so it is the copy that restores w after pass 2 — and
  // therefore, at the next step, the previous step's parameters. Such a set
  // needs no update of its own and is evaluated before any other set.
  virtual bool tracks_previous_step() const { return false; }
  // Called after the restore, just before every base step, with the
  // parameters the base is about to step from (TRAM-EMA's target).
  virtual void before_base_step(torch::TensorList set, torch::TensorList params) const {
    (void)set;
    (void)params;
  }
  // Called after every base step with the new parameters (MESA's EMA).
  virtual void after_base_step(torch::TensorList set, torch::TensorList params) const {
    (void)set;
    (void)params;
  }
};

// ---------------------------------------------------------------------------
// The ascent direction (docs/ALGORITHMS.md §2): e = coef * direction(w, g),
// coef = radius / norm_divisor(squared norm), one multi-tensor op.
// ---------------------------------------------------------------------------
class Direction {
 public:
  virtual ~Direction() = default;
  // The multi-tensor ascent this direction is (tram::ops, one fused op).
  virtual ops::Scaling scaling() const = 0;
  // The per-tensor offset the op takes from the tensor's group: eta for the
  // adaptive scaling, the damping eta_f for Fisher, unused otherwise.
  virtual double offset(const GroupOptions& group) const {
    (void)group;
    return 0.0;
  }
  // What the radius is divided by, from the squared norm s of the scaled
  // gradient: sqrt(s) + eps (SAM, ASAM), sqrt(s + eps) for Fisher.
  virtual double norm_divisor(double squared_norm, double eps_norm) const {
    return std::sqrt(squared_norm) + eps_norm;
  }
};

// ---------------------------------------------------------------------------
// The trust-region distance d between the target's and pass 1's predictions
// (docs/ALGORITHMS.md §5), accumulated over micro-batches and ranks exactly as
// on the concatenated batch.
// ---------------------------------------------------------------------------
class DistanceSum {
 public:
  virtual ~DistanceSum() = default;
  // One micro-batch's logits (mask: valid rows, optional).
  virtual void add(const torch::Tensor& target_logits, const torch::Tensor& current_logits,
                   const torch::Tensor& mask) = 0;
  // The accumulated totals as a 1-D float64 tensor (on the logits' device:
  // a sum keeps what it accumulates there); data-parallel ranks sum it
  // element-wise and hand the sum back with set_totals().
  virtual torch::Tensor totals() const = 0;
  virtual void set_totals(const torch::Tensor& totals) = 0;
  // The distance d of the whole batch (from the ranks' sum when set) as a
  // one-element float64 tensor, computed where the totals are and not read:
  // the engine reads it to the host together with the ascent's gradient
  // norm, one read for both (docs/ALGORITHMS.md §15).
  virtual torch::Tensor distance() const = 0;
};

class Distance {
 public:
  virtual ~Distance() = default;
  // A new, empty sum for one step.
  virtual std::unique_ptr<DistanceSum> start() const = 0;
};

// ---------------------------------------------------------------------------
// The trust-region target (docs/ALGORITHMS.md §4): what pass 1's predictions
// are compared with.
// ---------------------------------------------------------------------------
class Target {
 public:
  virtual ~Target() = default;
  // Parameter sets whose target passes this target reads (Passes::logits_at).
  virtual std::vector<std::shared_ptr<const ParameterSet>> parameter_sets() const { return {}; }
  // Passes of its own that must run before pass 1 (after the parameter sets').
  virtual void before_first_pass(Passes& passes) const { (void)passes; }
  // Adds micro-batch `micro_batch`'s distance between the target and pass 1's
  // output `first` to `sum`.
  virtual void add_distance(Passes& passes, int64_t micro_batch, const PassOutput& first,
                            DistanceSum& sum) const = 0;
  // Whether a caller of first_step(d) can measure d with its own forward
  // passes (true when the target needs no other parameters).
  virtual bool measurable_by_caller() const { return false; }
  // The noise its passes add to the input embeddings, if any.
  virtual std::optional<NoiseOptions> noise() const { return std::nullopt; }
  virtual void validate(const std::string& method) const { (void)method; }
};

// A trust region: where the distance d is measured, how, and how d becomes
// the radius r = clamp(scale * d, 0, max_radius).
struct TrustRegion {
  std::shared_ptr<const Target> target;
  std::shared_ptr<const Distance> distance;
  double scale = 1.0;
  std::optional<double> max_radius;  // none: no upper bound
};

// ---------------------------------------------------------------------------
// The ascent radius (docs/ALGORITHMS.md §3).
// ---------------------------------------------------------------------------
class Radius {
 public:
  virtual ~Radius() = default;
  // The trust region whose distance this radius needs; null for a fixed radius.
  virtual const TrustRegion* trust_region() const { return nullptr; }
  // The radius of each group, from the groups' options and this step's
  // trust-region distance (0 without a trust region).
  virtual std::vector<double> radii(const std::vector<const GroupOptions*>& groups, double distance) const = 0;
  virtual void validate(const std::string& method) const { (void)method; }
};

// ---------------------------------------------------------------------------
// A loss regularizer (docs/ALGORITHMS.md §7): the loss of every pass with
// gradient becomes L_task + weight() * penalty.
// ---------------------------------------------------------------------------
class Regularizer {
 public:
  virtual ~Regularizer() = default;
  // Its display name ("TRPO", "R3F", "MESA"), also used in combined names.
  virtual std::string name() const = 0;
  // lambda.
  virtual double weight() const = 0;
  // Parameter sets whose target passes it reads (Passes::logits_at).
  virtual std::vector<std::shared_ptr<const ParameterSet>> parameter_sets() const { return {}; }
  // R for the output `out` of a pass on micro-batch `micro_batch`, with
  // gradient; `perturbed` says the pass ran at w + e.
  virtual torch::Tensor penalty(Passes& passes, int64_t micro_batch, const PassOutput& out,
                                bool perturbed) const = 0;
  // The noise its passes add to the input embeddings, if any.
  virtual std::optional<NoiseOptions> noise() const { return std::nullopt; }
  virtual void validate(const std::string& method) const { (void)method; }
};

// ---------------------------------------------------------------------------
// Gradient rules (docs/ALGORITHMS.md §16): what the peers' SAM variants change
// about the gradients around the shared step — the vector the ascent follows
// (F-SAM, VaSSO), which tensors it perturbs (ESAM), the descent gradient
// (GSAM, LookSAM, WSAM), the steps without ascent (LookSAM) and an update
// after the base step (WSAM). State a rule keeps across steps lives in named
// per-parameter buffers the engine owns, saves and loads.
// ---------------------------------------------------------------------------

// Per-parameter buffers by name: entry i belongs to managed parameter i
// (GradientStep::index) and stays undefined until a rule sets it.
using RuleBuffers = std::map<std::string, std::vector<torch::Tensor>>;

// The gradients of one step as a rule sees them. Entry j of params, grads and
// first is managed parameter index[j] (among all the optimizer manages, in
// group order); only parameters with a gradient are listed.
struct GradientStep {
  int64_t step = 0;  // t, counted from 0
  double eps_norm = 1e-12;
  std::vector<torch::Tensor> params;
  // The gradient slots: g before the ascent and on steps without one, g_p
  // (pass 2) at the descent. A rule rewrites them in place.
  std::vector<torch::Tensor> grads;
  std::vector<size_t> index;
  std::vector<double> learning_rate;  // the base's rate for each one's group
  // Pass 1's gradient g, at the descent of an ascending step, when the rule
  // keeps_first_gradient(); empty otherwise.
  std::vector<torch::Tensor> first;
  RuleBuffers* state = nullptr;    // kept across steps, saved with the optimizer
  RuleBuffers* scratch = nullptr;  // this step only
};

// The ascent as a rule may shape it (prepare_ascent).
struct AscentStep : GradientStep {
  // What the ascent scales, per entry: g unless the rule replaces it.
  std::vector<torch::Tensor> vectors;
  // false: the entry is neither perturbed nor part of the ascent norm.
  std::vector<bool> perturb;
  // The radius of each parameter group; a rule may rescale it.
  std::vector<double> radii;
};

class GradientRule {
 public:
  virtual ~GradientRule() = default;
  // The names of the per-parameter buffers it keeps across steps.
  virtual std::vector<std::string> state_names() const { return {}; }
  // Whether the descent of an ascending step needs pass 1's gradient g
  // (GradientStep::first); the engine then keeps a copy.
  virtual bool keeps_first_gradient() const { return false; }
  // ESAM's data selection: the fraction of rows pass 2 keeps (those whose loss
  // the ascent raised most), when the closure returns per-row losses.
  virtual std::optional<double> kept_row_fraction() const { return std::nullopt; }
  // Before the ascent: may replace vectors, clear perturb, rescale radii.
  virtual void prepare_ascent(AscentStep& ascent) const { (void)ascent; }
  // After an ascent with a finite norm (a skipped ascent does not update state).
  virtual void after_ascent(const AscentStep& ascent) const { (void)ascent; }
  // The descent gradient of an ascending step, from g_p in grads (and g).
  virtual void descent(GradientStep& step) const { (void)step; }
  // The descent gradient of a step without ascent (interval, LookSAM's k-1
  // one-pass steps), from g in grads.
  virtual void descent_without_ascent(GradientStep& step) const { (void)step; }
  // After the base step of an ascending step, with the new parameters.
  virtual void after_base_step(GradientStep& step) const { (void)step; }
  virtual void validate(const std::string& method) const { (void)method; }
};

}  // namespace tram::policy
