// The engine: the two-phase step (docs/ALGORITHMS.md §1), written once for
// every method. It runs the phases and asks the method's policies; the
// parameter-sized buffers live in detail::ParameterSets, the passes of a
// forward-closure step in detail::StepPasses, the gradient hooks (ranks, loss
// scaling, clipping) in engine/gradient_hooks.cpp and the checkpoint format
// in serialization.cpp. Each phase opens a profiler scope, RECORD_USER_SCOPE
// "tram::<phase>", so that LibTorch's profiler (and tram-bench-step's phase
// breakdown) shows where a step's time goes; with no profiler attached a
// scope costs one check of a thread-local flag.
#include <tram/optimizer.h>

#include "collectives.h"
#include "engine/managed.h"
#include "engine/parameter_sets.h"
#include "engine/rule_state.h"
#include "engine/step_passes.h"
#include "engine/host_reads.h"

#include <tram/ops.h>

#include <torch/autograd.h>

#include <ATen/record_function.h>
#include <c10/util/ScopeExit.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

namespace tram {

using torch::Tensor;

namespace {
// Default noise: z ~ N(0, sigma^2) or U(-sigma, sigma), i.i.d. per element,
// from LibTorch's global generator (so torch::manual_seed reproduces it).
Tensor draw_noise(const Tensor& embeddings, const NoiseOptions& options, const Pass&) {
  torch::NoGradGuard no_grad;
  if (options.distribution() == NoiseDistribution::kNormal) {
    return torch::randn_like(embeddings) * options.sigma();
  }
  return (torch::rand_like(embeddings) * 2 - 1) * options.sigma();
}

std::vector<torch::optim::OptimizerParamGroup> mirror_groups(torch::optim::Optimizer& base,
                                                             const GroupOptions& defaults) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (size_t i = 0; i < base.param_groups().size(); ++i) {
    auto options = std::make_unique<GroupOptions>(defaults);
    options->link_learning_rate(&base, i);
    groups.emplace_back(base.param_groups()[i].params(), std::move(options));
  }
  return groups;
}

// The parameter sets the method's target and regularizer evaluate the model at.
std::vector<std::shared_ptr<const policy::ParameterSet>> parameter_sets_of(const MethodConfig& method) {
  std::vector<std::shared_ptr<const policy::ParameterSet>> sets;
  if (const auto* region = method.trust_region()) sets = region->target->parameter_sets();
  if (method.regularizer()) {
    for (auto& set : method.regularizer()->parameter_sets()) sets.push_back(std::move(set));
  }
  return sets;
}

// A loss for the report, in float64 and not aliasing the closure's tensor
// (which the caller may change in place later).
Tensor detached_copy(const Tensor& value) {
  return value.detach().to(torch::kFloat64, /*non_blocking=*/false, /*copy=*/true);
}
// sum += value on value's device, in float64: the sum a host loop of
// value.item<double>() would make, without reading each value.
void accumulate(Tensor& sum, const Tensor& value) {
  sum = sum.defined() ? sum + value.detach().to(torch::kFloat64) : detached_copy(value);
}
}  // namespace

SharpnessAware::SharpnessAware(std::shared_ptr<torch::optim::Optimizer> base, MethodConfig method,
                               GroupOptions defaults)
    : torch::optim::Optimizer(std::vector<torch::optim::OptimizerParamGroup>{},
                              std::make_unique<GroupOptions>(defaults)),
      base_(std::move(base)),
      method_(std::move(method)) {
  TORCH_CHECK(base_ != nullptr, method_.name(), ": the base optimizer is null; pass e.g. "
              "std::make_shared<torch::optim::SGD>(params, options)");
  method_.validate();
  // add_param_group clones the options it is given, so each group gets its
  // own GroupOptions (not the base's type, not the defaults' pointer).
  for (const auto& group : mirror_groups(*base_, defaults)) add_param_group(group);
  validate();
  set_noise_sampler(nullptr);
  // θ_{-1} = θ_0: every parameter set starts as the initial parameters.
  const auto all = managed_parameters(false).params;
  sets_ = std::make_unique<detail::ParameterSets>(parameter_sets_of(method_), all);
  rules_ = std::make_unique<detail::RuleState>(method_.gradient_rule(), all.size());
}

SharpnessAware::~SharpnessAware() = default;

void SharpnessAware::set_noise_sampler(NoiseSampler sampler) {
  noise_sampler_ = sampler ? std::move(sampler) : NoiseSampler(draw_noise);
}

bool SharpnessAware::perturbed() const { return sets_->anchored(); }

GroupOptions& SharpnessAware::group_options(std::size_t group) {
  sync_groups();
  TORCH_CHECK(group < param_groups_.size(), method_.name(), ": no parameter group ", group, " (there are ",
              param_groups_.size(), ")");
  return static_cast<GroupOptions&>(param_groups_[group].options());
}

std::vector<const GroupOptions*> SharpnessAware::group_option_list() const {
  std::vector<const GroupOptions*> groups;
  for (const auto& g : param_groups_) groups.push_back(static_cast<const GroupOptions*>(&g.options()));
  return groups;
}

void SharpnessAware::validate() const {
  const auto& n = method_.name();
  for (size_t i = 0; i < param_groups_.size(); ++i) {
    const auto* options = dynamic_cast<const GroupOptions*>(&param_groups_[i].options());
    TORCH_CHECK(options != nullptr, n, ": parameter group ", i, " has options of another optimizer type; "
                "groups are mirrored from the base optimizer — add them there");
    TORCH_CHECK(options->rho() >= 0 && std::isfinite(options->rho()), n, ": invalid rho: ", options->rho(),
                " in group ", i, " (the ascent radius must be >= 0)");
    TORCH_CHECK(options->eta() >= 0 && std::isfinite(options->eta()), n, ": invalid eta: ", options->eta(),
                " in group ", i, " (the adaptive offset must be >= 0)");
    TORCH_CHECK(options->fisher_eta() >= 0 && std::isfinite(options->fisher_eta()), n, ": invalid fisher_eta: ",
                options->fisher_eta(), " in group ", i, " (the Fisher damping must be >= 0)");
  }
}

// Keeps the mirror of the base's groups current: groups added to the base are
// picked up with the default options; groups added to the wrapper are an error
// (the base would never step them).
void SharpnessAware::sync_groups() {
  auto& base_groups = base_->param_groups();
  TORCH_CHECK(param_groups_.size() <= base_groups.size(), method_.name(),
              ": a parameter group was added to the tram optimizer itself; add it to the base optimizer "
              "instead (tram mirrors the base's groups)");
  size_t before = 0;
  for (const auto& g : param_groups_) before += g.params().size();
  for (size_t i = 0; i < base_groups.size(); ++i) {
    if (i >= param_groups_.size()) {
      auto options = std::make_unique<GroupOptions>(static_cast<const GroupOptions&>(*defaults_));
      options->link_learning_rate(base_.get(), i);
      add_param_group(torch::optim::OptimizerParamGroup(base_groups[i].params(), std::move(options)));
    } else if (param_groups_[i].params().size() != base_groups[i].params().size()) {
      param_groups_[i].params() = base_groups[i].params();
    }
  }
  size_t after = 0;
  for (const auto& g : param_groups_) after += g.params().size();
  if (after != before) {
    TORCH_CHECK(sets_->empty(), method_.name(), ": the base optimizer's parameters changed after construction; ",
                method_.name(),
                " keeps parameter-sized buffers per parameter, so build it after the base has all its parameters");
    sets_->forget_backup();
  }
}

SharpnessAware::Managed SharpnessAware::managed_parameters(bool with_grad_only, bool perturbed_groups_only) const {
  Managed managed;
  size_t index = 0;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const bool skip_group =
        perturbed_groups_only && !static_cast<const GroupOptions&>(param_groups_[g].options()).perturb();
    for (const auto& p : param_groups_[g].params()) {
      const Tensor& grad = p.grad();
      if (grad.defined()) {
        TORCH_CHECK(!grad.is_sparse(), method_.name(), ": sparse gradients are not supported (parameter ", index,
                    " in group ", g, "); use dense gradients, e.g. nn::Embedding with sparse(false)");
        TORCH_CHECK(!grad.is_complex() && !p.is_complex(), method_.name(),
                    ": complex parameters are not supported (parameter ", index, " in group ", g, ")");
      }
      if ((!with_grad_only || grad.defined()) && !skip_group) {
        managed.params.push_back(p);
        managed.grads.push_back(grad);
        managed.index.push_back(index);
        managed.group.push_back(g);
      }
      ++index;
    }
  }
  return managed;
}

policy::GradientStep SharpnessAware::gradient_step(const Managed& managed) {
  policy::GradientStep step;
  step.step = step_count_;
  step.eps_norm = method_.eps_norm();
  step.params = managed.params;
  step.grads = managed.grads;
  step.index = managed.index;
  for (size_t g : managed.group) step.learning_rate.push_back(base_->param_groups()[g].options().get_lr());
  step.state = rules_->state();
  step.scratch = rules_->scratch();
  return step;
}

// What the ascent takes from the phases before it, all still on the device
// except a distance the caller gave.
struct SharpnessAware::AscentInputs {
  Tensor overflow;              // the loss scaler's inf/NaN flag for pass 1 (undefined: no scaler)
  Tensor distance;              // d as measured this step (undefined: a fixed radius, or given)
  double given_distance = 0.0;  // d from the caller of first_step(d)
};

bool SharpnessAware::ascend(const AscentInputs& inputs, StepReport& report) {
  RECORD_USER_SCOPE("tram::ascend");
  torch::NoGradGuard no_grad;
  const auto groups = group_option_list();
  // The values the ascent decides with are read to the host together: on a
  // GPU one synchronisation for the flag, d and ||T g||.
  constexpr size_t kNotQueued = static_cast<size_t>(-1);
  detail::HostReadBatch reads;
  const size_t overflow = inputs.overflow.defined() ? reads.add(inputs.overflow) : kNotQueued;
  const size_t distance = inputs.distance.defined() ? reads.add(inputs.distance) : kNotQueued;
  std::vector<double> radii;
  // Reads what is queued; false when pass 1's gradient overflowed.
  const auto read_decision = [&] {
    reads.read();
    if (overflow != kNotQueued && reads[overflow] > 0) return false;
    report.distance = distance != kNotQueued ? reads[distance] : inputs.given_distance;
    radii = method_.radius()->radii(groups, report.distance);
    return true;
  };
  // SAM-ON: groups with perturb = false are neither perturbed nor in the norm.
  Managed m = managed_parameters(/*with_grad_only=*/true, /*perturbed_groups_only=*/true);
  // The gradient rule shapes the ascent: what it follows (F-SAM, VaSSO), which
  // tensors it moves (ESAM), how far. It takes the radius and updates its own
  // state, so the flag and d are read before it, and ||T g|| of what it
  // shaped after it: a second read where the first had anything to read.
  const auto* rule = rules_->rule();
  policy::AscentStep shaped;
  if (rule) {
    if (!read_decision()) return false;
    const Managed all = managed_parameters(/*with_grad_only=*/true);
    rules_->keep_first_gradient(all.grads, all.index);
    static_cast<policy::GradientStep&>(shaped) = gradient_step(m);
    shaped.vectors = m.grads;
    shaped.perturb.assign(m.params.size(), true);
    shaped.radii = radii;
    rule->prepare_ascent(shaped);
    Managed kept;
    for (size_t j = 0; j < m.params.size(); ++j) {
      if (!shaped.perturb[j]) continue;
      kept.params.push_back(m.params[j]);
      kept.grads.push_back(shaped.vectors[j]);
      kept.index.push_back(m.index[j]);
      kept.group.push_back(m.group[j]);
    }
    m = std::move(kept);
    radii = shaped.radii;
  }
  const policy::Direction& direction = *method_.direction();
  ops::AscentSpec spec;
  spec.scaling = direction.scaling();
  for (size_t i = 0; i < m.params.size(); ++i) spec.eta.push_back(direction.offset(*groups[m.group[i]]));
  // ||T g|| is needed on the host: the coefficient r / ||T g|| is a host-side
  // argument of the perturbation.
  const size_t norm = reads.add(ops::squared_norm(m.params, m.grads, spec));
  if (rule) {
    reads.read();
  } else if (!read_decision()) {
    return false;
  }
  report.radius = radii;
  const double squared = reads[norm];
  report.ascent_norm = std::sqrt(squared);
  if (!std::isfinite(squared)) {
    // A loss-scaled fp16 pass may overflow: no ascent, the step proceeds as a
    // plain base step, and the event is counted.
    report.ascent_skipped = true;
    ++skipped_ascents_;
    rules_->mark_ascended(/*skipped=*/true);
    return true;
  }
  const double divisor = direction.norm_divisor(squared, method_.eps_norm());
  for (size_t i = 0; i < m.params.size(); ++i) spec.coef.push_back(radii[m.group[i]] / divisor);
  report.perturbation_norm = sets_->perturb(m.params, m.grads, m.index, managed_parameters(false).params.size(), spec);
  rules_->mark_ascended(/*skipped=*/false);
  if (rule) rule->after_ascent(shaped);
  return true;
}

void SharpnessAware::restore() {
  RECORD_USER_SCOPE("tram::restore");
  sets_->restore();
}

void SharpnessAware::base_step() {
  RECORD_USER_SCOPE("tram::base_step");
  sets_->before_base_step(managed_parameters(false).params);
  base_->step();
  if (const auto* rule = rules_->rule(); rule && rules_->ascended()) {
    torch::NoGradGuard no_grad;
    auto step = gradient_step(managed_parameters(/*with_grad_only=*/true));
    rule->after_base_step(step);
  }
  sets_->after_base_step(managed_parameters(false).params);
  if (scaler_) scaler_->update(/*found_inf=*/false);
  ++step_count_;
}

// ---------------------------------------------------------------------------
// The LibTorch closure and the two-call API.
// ---------------------------------------------------------------------------

Tensor SharpnessAware::step(LossClosure closure) {
  const auto& n = method_.name();
  TORCH_CHECK(closure, n, ": step() needs a closure that zeroes the gradients, runs forward and backward and "
              "returns the loss (or use first_step()/second_step())");
  TORCH_CHECK(!method_.needs_forward_closure(), n, " needs the model's logits: call step() with a "
              "tram::ForwardClosure (it returns loss and logits of each pass) instead of a LossClosure");
  TORCH_CHECK(!perturbed(), n, ": step() called while first_step() left w perturbed; call second_step() or restore()");
  sync_groups();
  validate();
  rules_->begin_step();
  Tensor loss;
  {
    torch::AutoGradMode enable_grad(true);
    detail::drop_autocast_cache();
    loss = closure();
  }
  StepReport report;
  if (loss.defined() && loss.numel() == 1) report.loss = ReportValue::on_device(detached_copy(loss));
  report.passes = 1;
  if (method_.ascends_at(step_count_)) {
    AscentInputs inputs;
    inputs.overflow = prepare_ascent_gradient();
    if (!ascend(inputs, report)) {
      skip_step(report);
      return loss;
    }
    warn_without_row_losses();
    {
      auto put_back = c10::make_scope_exit([this] { restore(); });
      torch::AutoGradMode enable_grad(true);
      detail::drop_autocast_cache();
      const Tensor perturbed_loss = closure();
      if (perturbed_loss.defined() && perturbed_loss.numel() == 1) {
        report.perturbed_loss = ReportValue::on_device(detached_copy(perturbed_loss));
        report.sharpness = ReportValue::minus(report.perturbed_loss, report.loss);
      }
    }
    report.passes = 2;
  }
  descend(report);
  return loss;
}

void SharpnessAware::first_step(std::optional<double> trust_region_distance) {
  const auto& n = method_.name();
  TORCH_CHECK(method_.has_ascent(), n, " has no ascent; first_step() is for sharpness-aware methods");
  TORCH_CHECK(!perturbed(), n, ": first_step() called twice without second_step(); call second_step() or restore()");
  TORCH_CHECK(!method_.regularizer() && !method_.first_pass_noise(), n,
              ": first_step()/second_step() cannot run the extra passes of this method; use step(ForwardClosure)");
  TORCH_CHECK(method_.interval() == 1, n, ": with interval ", method_.interval(),
              " most steps take one pass, which the two-call API cannot express; use step()");
  sync_groups();
  validate();
  rules_->begin_step();
  StepReport report;
  AscentInputs inputs;
  if (const auto* region = method_.trust_region()) {
    TORCH_CHECK(region->target->measurable_by_caller(), n, ": the trust-region target at other parameters (θt-1, "
                "θ0) needs the target passes of step(ForwardClosure); first_step(d) supports target=noise only");
    TORCH_CHECK(trust_region_distance && std::isfinite(*trust_region_distance) && *trust_region_distance >= 0, n,
                ": first_step(d) needs this step's trust-region distance d >= 0 (got ",
                trust_region_distance ? std::to_string(*trust_region_distance) : std::string("none"), ")");
    report.distance = inputs.given_distance = *trust_region_distance;
  } else {
    TORCH_CHECK(!trust_region_distance, n, " has a fixed radius; first_step() takes no distance");
  }
  inputs.overflow = prepare_ascent_gradient();
  if (!ascend(inputs, report)) {
    // w stays unperturbed; second_step() then skips the base step too.
    report.step_skipped = true;
    last_step_ = report;
    return;
  }
  warn_without_row_losses();
  detail::drop_autocast_cache();  // the caller's pass 2 must see w + e
  last_step_ = report;
}

void SharpnessAware::second_step() {
  // w changes (restore, base step): the caller's next pass must not see casts of the old w.
  auto drop = c10::make_scope_exit([] { detail::drop_autocast_cache(); });
  StepReport report = last_step_;
  restore();
  if (report.step_skipped) {
    skip_step(report);
    return;
  }
  descend(report);
}

// ---------------------------------------------------------------------------
// The forward-closure step: every pass a method needs, as named phases.
// ---------------------------------------------------------------------------

StepReport SharpnessAware::step(const ForwardClosure& forward) {
  const auto& n = method_.name();
  TORCH_CHECK(forward, n, ": step() needs a forward closure returning {loss, logits[, mask]}");
  TORCH_CHECK(!perturbed(), n, ": step() called while first_step() left w perturbed; call second_step() or restore()");
  sync_groups();
  validate();
  rules_->begin_step();

  StepReport report;
  const bool needs_logits = method_.trust_region() != nullptr || method_.regularizer() != nullptr;
  detail::StepPasses passes(forward, n, module_.get(), &noise_sampler_, micro_batches_, needs_logits, report);
  // A throw in any phase leaves no parameter perturbed and no buffer changed
  // by a pass other than pass 1.
  auto on_exit = c10::make_scope_exit([&] {
    restore();
    passes.put_back_statistics();
  });

  // With interval > 1, the other steps are one pass of the method's loss and
  // the base step: no trust-region target, no ascent.
  const bool ascending = method_.ascends_at(step_count_);
  run_reference_passes(passes, ascending);
  const std::vector<PassOutput> first = run_first_pass(passes, ascending, report);
  if (ascending) {
    AscentInputs inputs;
    inputs.overflow = prepare_ascent_gradient();
    inputs.distance = measure_distance(passes, first);
    if (!ascend(inputs, report)) {
      on_exit.release();
      skip_step(report);
      return report;
    }
    select_rows(passes, first);
    run_second_pass(passes, report);
  } else {
    report.radius.assign(param_groups_.size(), 0.0);
  }

  // Exact restore, then the base step with the descent gradient.
  on_exit.release();
  restore();
  descend(report);
  return report;
}

// 1. Target passes under no-grad, before pass 1 (the regularizers need them in
//    its loss): one per parameter set and micro-batch, w put back exactly by
//    the parameter sets' owner; then the target's own (noised inputs). A step
//    without ascent runs only the regularizer's.
void SharpnessAware::run_reference_passes(detail::StepPasses& passes, bool ascending) {
  RECORD_USER_SCOPE("tram::reference_passes");
  const std::vector<Tensor> all = managed_parameters(false).params;
  std::vector<std::string> needed;
  if (method_.regularizer()) {
    for (const auto& set : method_.regularizer()->parameter_sets()) needed.push_back(set->name());
  }
  for (size_t s = 0; s < sets_->size(); ++s) {
    if (!ascending && std::find(needed.begin(), needed.end(), sets_->name(s)) == needed.end()) continue;
    std::vector<Tensor> logits;
    sets_->evaluate_at(s, all, [&] {
      for (int64_t i = 0; i < micro_batches_; ++i) logits.push_back(passes.run(PassKind::kTarget, {}, i).logits);
    });
    passes.keep_logits_at(sets_->name(s), std::move(logits));
  }
  if (const auto* region = method_.trust_region(); region && ascending) region->target->before_first_pass(passes);
}

// 2. Pass 1 at w, on clean inputs (noised ones for TRAM-Fisher's ascent), over
//    the micro-batches; the logits are kept (detached) for the distance.
std::vector<PassOutput> SharpnessAware::run_first_pass(detail::StepPasses& passes, bool ascending,
                                                       StepReport& report) {
  RECORD_USER_SCOPE("tram::first_pass");
  const int64_t k = micro_batches_;
  std::vector<PassOutput> first(k);
  zero_grad();
  // Summed on the device: the report reads them only if asked.
  Tensor loss_sum, regularizer_sum;
  for (int64_t i = 0; i < k; ++i) {
    first[i] = passes.run_first(ascending ? method_.first_pass_noise() : std::nullopt, i);
    auto [loss, r] = regularized(passes, first[i], i, /*perturbed=*/false);
    passes.backward(loss, scaler_.get());
    accumulate(loss_sum, first[i].loss);
    if (r.defined()) accumulate(regularizer_sum, r);
    first[i].loss = Tensor();
    if (first[i].logits.defined()) first[i].logits = first[i].logits.detach();
    if (first[i].row_losses.defined()) first[i].row_losses = first[i].row_losses.detach();
  }
  report.loss = ReportValue::on_device(loss_sum / static_cast<double>(k));
  if (regularizer_sum.defined()) report.regularizer = ReportValue::on_device(regularizer_sum / static_cast<double>(k));
  return first;
}

// 3. The radius's input: this batch's trust-region distance (summed over
//    micro-batches and ranks), left on the device for the ascent's one read;
//    none for a fixed radius.
Tensor SharpnessAware::measure_distance(detail::StepPasses& passes, const std::vector<PassOutput>& first) {
  const auto* region = method_.trust_region();
  if (!region) return {};
  RECORD_USER_SCOPE("tram::radius");
  auto sum = region->distance->start();
  for (int64_t i = 0; i < micro_batches_; ++i) region->target->add_distance(passes, i, first[i], *sum);
  if (process_group_) {
    // On the parameters' device: NCCL reduces CUDA tensors only.
    const auto params = managed_parameters(false).params;
    Tensor totals = sum->totals().to(params.empty() ? torch::Device(torch::kCPU) : params[0].device());
    detail::all_reduce_sum(*process_group_, method_.name(), "trust-region distance all-reduce", totals);
    sum->set_totals(totals);
  }
  return sum->distance();
}

// 3b. ESAM's data selection (docs/ALGORITHMS.md §16): a no-grad pass at w + e
//     per micro-batch; pass 2 keeps the ceil(fraction * rows) rows whose loss
//     the ascent raised most (ties: the lower row first), in row order. All on
//     the device: no value is read to the host.
void SharpnessAware::select_rows(detail::StepPasses& passes, const std::vector<PassOutput>& first) {
  const auto* rule = rules_->rule();
  const auto fraction = rule ? rule->kept_row_fraction() : std::nullopt;
  if (!fraction || !rules_->ascended()) return;
  RECORD_USER_SCOPE("tram::select_rows");
  const auto& n = method_.name();
  for (const auto& out : first) {
    if (!out.row_losses.defined()) {
      warn_without_row_losses();
      return;
    }
  }
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < micro_batches_; ++i) {
    const Tensor before = first[i].row_losses;
    TORCH_CHECK(before.dim() == 1, n, ": PassOutput::row_losses must be 1-D (one loss per row), got shape ",
                before.sizes());
    const PassOutput probe = passes.run(PassKind::kSelection, {}, i);
    TORCH_CHECK(probe.row_losses.defined() && probe.row_losses.sizes() == before.sizes(), n,
                ": the forward closure returned per-row losses of shape ", before.sizes(),
                " on pass 1 but ", probe.row_losses.defined() ? c10::str(probe.row_losses.sizes()) : "none",
                " on the selection pass; return them on every pass");
    const int64_t rows = before.numel();
    const auto keep = std::min<int64_t>(rows, static_cast<int64_t>(std::ceil(*fraction * static_cast<double>(rows))));
    const Tensor rise = probe.row_losses.detach().to(torch::kFloat64) - before.to(torch::kFloat64);
    const Tensor order = std::get<1>(rise.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
    passes.select_rows(i, std::get<0>(order.slice(0, 0, keep).sort()));
  }
}

void SharpnessAware::warn_without_row_losses() {
  const auto* rule = rules_->rule();
  if (!rule || !rule->kept_row_fraction()) return;
  rules_->warn_once(method_.name() + ": no per-row losses, so the data selection (SDS) is off and only the "
                    "stochastic weight perturbation (SWP) runs; for SDS call step() with a tram::ForwardClosure "
                    "whose PassOutput has row_losses (docs/ALGORITHMS.md §16)");
}

// 4. Pass 2 at w + e on clean inputs, accumulating the descent gradient.
void SharpnessAware::run_second_pass(detail::StepPasses& passes, StepReport& report) {
  RECORD_USER_SCOPE("tram::second_pass");
  zero_grad();
  Tensor loss_sum;
  for (int64_t i = 0; i < micro_batches_; ++i) {
    const PassOutput second = passes.run(PassKind::kPerturbed, {}, i);
    passes.backward(regularized(passes, second, i, /*perturbed=*/true).first, scaler_.get());
    accumulate(loss_sum, second.loss);
  }
  report.perturbed_loss = ReportValue::on_device(loss_sum / static_cast<double>(micro_batches_));
  report.sharpness = ReportValue::minus(report.perturbed_loss, report.loss);
}

std::pair<Tensor, Tensor> SharpnessAware::regularized(detail::StepPasses& passes, const PassOutput& out,
                                                      int64_t micro_batch, bool perturbed) const {
  const auto& regularizer = method_.regularizer();
  if (!regularizer) return {out.loss, Tensor()};
  Tensor r = regularizer->penalty(passes, micro_batch, out, perturbed);
  return {out.loss + regularizer->weight() * r.to(out.loss.dtype()), r};
}

}  // namespace tram
