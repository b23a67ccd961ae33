// The engine: the two-phase step of SPEC 1, written once for every method.
#include <tram/optimizer.h>

#include <tram/ops.h>

#include <torch/autograd.h>
#include <torch/nn/module.h>
#include <torch/serialize/archive.h>

#include <ATen/autocast_mode.h>
#include <c10/util/ScopeExit.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/nn/utils/clip_grad.h>

#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <utility>

namespace tram {

namespace {

using torch::Tensor;

// Default noise: z ~ N(0, sigma^2) or U(-sigma, sigma), i.i.d. per element,
// from LibTorch's global generator (so torch::manual_seed reproduces it).
Tensor draw_noise(const Tensor& embeddings, const NoiseOptions& options, const Pass&) {
  torch::NoGradGuard no_grad;
  if (options.distribution() == NoiseDistribution::kNormal) {
    return torch::randn_like(embeddings) * options.sigma();
  }
  return (torch::rand_like(embeddings) * 2 - 1) * options.sigma();
}

// Which multi-tensor ascent a method uses.
ops::Scaling scaling_of(const MethodConfig& method) {
  const bool released = method.formula() == AscentFormula::kReleased;
  switch (method.ascent()) {
    case Ascent::kSAM:
      return released ? ops::Scaling::kReleasedIdentity : ops::Scaling::kIdentity;
    case Ascent::kAdaptive:
      return released ? ops::Scaling::kReleasedAdaptive : ops::Scaling::kAdaptive;
    case Ascent::kFisher:
      return ops::Scaling::kFisher;
    case Ascent::kNone:
      break;
  }
  TORCH_CHECK(false, method.name(), ": internal error: no ascent scaling for a method without ascent");
}

// The trust-region target passes run in eval mode (no dropout). Module::train
// is recursive, so each module's own flag is recorded and put back in
// pre-order: a parent's call is then overridden by its children's.
class EvalModeScope {
 public:
  explicit EvalModeScope(torch::nn::Module* module) : module_(module) {
    if (module_ == nullptr) return;
    for (const auto& m : module_->modules(/*include_self=*/true)) {
      modes_.emplace_back(m, m->is_training());
    }
    module_->eval();
  }
  ~EvalModeScope() {
    for (auto& [m, training] : modes_) m->train(training);
  }
  EvalModeScope(const EvalModeScope&) = delete;
  EvalModeScope& operator=(const EvalModeScope&) = delete;

 private:
  torch::nn::Module* module_;
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> modes_;
};

// Passes after the first must not update running statistics (BatchNorm).
// The buffers are saved before such a pass and put back after the backward
// that follows it: putting them back right after the forward would modify
// tensors the backward of batch norm still needs.
class BufferSnapshot {
 public:
  void take(torch::nn::Module* module) {
    if (module == nullptr || taken_) return;
    torch::NoGradGuard no_grad;
    buffers_ = module->buffers(/*recurse=*/true);
    for (const auto& b : buffers_) copies_.push_back(b.defined() ? b.clone() : Tensor());
    taken_ = true;
  }
  void put_back() {
    if (!taken_) return;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < buffers_.size(); ++i) {
      if (copies_[i].defined()) buffers_[i].copy_(copies_[i]);
    }
    buffers_.clear();
    copies_.clear();
    taken_ = false;
  }

 private:
  std::vector<Tensor> buffers_, copies_;
  bool taken_ = false;
};

// Runs one collective and waits for it. A rank that died or timed out makes
// the others fail here, with the process group's own reason attached.
template <class Start>
void collective(const std::string& method, const char* what, Start&& start) {
  try {
    start()->wait();
  } catch (const std::exception& e) {
    TORCH_CHECK(false, method, ": the ", what, " over the process group failed (a rank may have died or timed out): ",
                e.what());
  }
}

std::vector<Tensor> clone_all(const std::vector<Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  std::vector<Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.detach().clone());
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// GroupOptions
// ---------------------------------------------------------------------------

double GroupOptions::get_lr() const {
  return lr_base_ != nullptr ? lr_base_->param_groups().at(lr_group_).options().get_lr() : local_lr_;
}

void GroupOptions::set_lr(double lr) {
  if (lr_base_ != nullptr) {
    lr_base_->param_groups().at(lr_group_).options().set_lr(lr);
  } else {
    local_lr_ = lr;
  }
}

void GroupOptions::link_learning_rate(torch::optim::Optimizer* base, std::size_t index) {
  lr_base_ = base;
  lr_group_ = index;
}

void GroupOptions::serialize(torch::serialize::OutputArchive& archive) const {
  archive.write("rho", c10::IValue(rho_));
  archive.write("eta", c10::IValue(eta_));
  archive.write("fisher_eta", c10::IValue(fisher_eta_));
}

void GroupOptions::serialize(torch::serialize::InputArchive& archive) {
  c10::IValue value;
  archive.read("rho", value);
  rho_ = value.toDouble();
  archive.read("eta", value);
  eta_ = value.toDouble();
  archive.read("fisher_eta", value);
  fisher_eta_ = value.toDouble();
}

// ---------------------------------------------------------------------------
// Pass
// ---------------------------------------------------------------------------

const char* to_string(PassKind kind) {
  switch (kind) {
    case PassKind::kClean: return "clean";
    case PassKind::kTarget: return "target";
    case PassKind::kNoisy: return "noisy";
    case PassKind::kPerturbed: return "perturbed";
    case PassKind::kPerturbedNoisy: return "perturbed-noisy";
  }
  return "?";
}

Tensor Pass::perturb(const Tensor& embeddings) const {
  if (!noise_) return embeddings;
  Tensor noise = (*sampler_)(embeddings, *noise_, *this);
  TORCH_CHECK(noise.sizes() == embeddings.sizes(), "tram: the noise sampler returned shape ", noise.sizes(),
              " for embeddings of shape ", embeddings.sizes(), "; it must return noise of the embeddings' shape");
  return embeddings + noise.to(embeddings.options());
}

// ---------------------------------------------------------------------------
// MethodConfig
// ---------------------------------------------------------------------------

bool MethodConfig::needs_forward_closure() const {
  return radius_ == RadiusSource::kTrustRegion || regularizer_.kind() != Regularizer::kNone || noisy_first_pass_;
}

void MethodConfig::validate() const {
  const auto& n = name_;
  TORCH_CHECK(eps_norm_ > 0 && std::isfinite(eps_norm_), n, ": invalid eps_norm: ", eps_norm_,
              " (must be a positive number, default 1e-12)");
  TORCH_CHECK(!(formula_ == AscentFormula::kReleased && ascent_ == Ascent::kFisher), n,
              ": ascent=released exists only for the SAM/ASAM-style ascent of the released TRAM code; "
              "use ascent=paper with a Fisher ascent");
  if (radius_ == RadiusSource::kTrustRegion) {
    const auto& tr = trust_region_;
    TORCH_CHECK(ascent_ != Ascent::kNone, n, ": a trust-region radius needs an ascent");
    TORCH_CHECK(tr.target() != Target::kNone, n, ": a trust-region radius needs a target (previous, pretrained, noise)");
    TORCH_CHECK(tr.scale() >= 0 && std::isfinite(tr.scale()), n, ": invalid scale: ", tr.scale(),
                " (must be >= 0; the radius is scale * d)");
    TORCH_CHECK(!tr.max_radius() || *tr.max_radius() >= 0, n, ": invalid max_radius: ", tr.max_radius().value_or(0),
                " (must be >= 0, or unset for no bound)");
  }
  if (radius_ == RadiusSource::kTrustRegion || noisy_first_pass_) {
    const auto& noise = trust_region_.noise();
    TORCH_CHECK(noise.sigma() >= 0 && std::isfinite(noise.sigma()), n, ": invalid sigma: ", noise.sigma(),
                " (the embedding noise scale must be >= 0)");
  }
  const auto& reg = regularizer_;
  if (reg.kind() != Regularizer::kNone) {
    TORCH_CHECK(reg.lambda() >= 0 && std::isfinite(reg.lambda()), n, ": invalid lambda: ", reg.lambda(),
                " (the regularizer weight must be >= 0)");
    TORCH_CHECK(reg.noise().sigma() >= 0 && std::isfinite(reg.noise().sigma()), n,
                ": invalid reg_sigma: ", reg.noise().sigma(), " (must be >= 0)");
    TORCH_CHECK(reg.ema_decay() >= 0 && reg.ema_decay() <= 1, n, ": invalid ema_decay: ", reg.ema_decay(),
                " (must be in [0, 1])");
    TORCH_CHECK(reg.temperature() > 0 && std::isfinite(reg.temperature()), n,
                ": invalid temperature: ", reg.temperature(), " (must be > 0)");
  }
}

// ---------------------------------------------------------------------------
// SharpnessAware
// ---------------------------------------------------------------------------

// The parameters a step works on, flattened over the groups, with the
// per-tensor options the multi-tensor ops take.
struct SharpnessAware::Managed {
  std::vector<Tensor> params;
  std::vector<Tensor> grads;
  std::vector<size_t> index;  // position among all managed parameters
  std::vector<size_t> group;
};

namespace {
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
  init_parameter_sets();
}

void SharpnessAware::set_noise_sampler(NoiseSampler sampler) {
  noise_sampler_ = sampler ? std::move(sampler) : NoiseSampler(draw_noise);
}

GroupOptions& SharpnessAware::group_options(std::size_t group) {
  sync_groups();
  TORCH_CHECK(group < param_groups_.size(), method_.name(), ": no parameter group ", group, " (there are ",
              param_groups_.size(), ")");
  return static_cast<GroupOptions&>(param_groups_[group].options());
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
    TORCH_CHECK(previous_.empty() && pretrained_.empty() && ema_.empty(), method_.name(),
                ": the base optimizer's parameters changed after construction; ", method_.name(),
                " keeps parameter-sized buffers per parameter, so build it after the base has all its parameters");
    backup_.clear();
  }
}

SharpnessAware::Managed SharpnessAware::managed_parameters(bool with_grad_only) const {
  Managed managed;
  size_t index = 0;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    for (const auto& p : param_groups_[g].params()) {
      const Tensor& grad = p.grad();
      if (grad.defined()) {
        TORCH_CHECK(!grad.is_sparse(), method_.name(), ": sparse gradients are not supported (parameter ", index,
                    " in group ", g, "); use dense gradients, e.g. nn::Embedding with sparse(false)");
        TORCH_CHECK(!grad.is_complex() && !p.is_complex(), method_.name(),
                    ": complex parameters are not supported (parameter ", index, " in group ", g, ")");
      }
      if (!with_grad_only || grad.defined()) {
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

void SharpnessAware::init_parameter_sets() {
  const auto all = managed_parameters(/*with_grad_only=*/false).params;
  const auto target = method_.radius() == RadiusSource::kTrustRegion ? method_.trust_region().target() : Target::kNone;
  const auto regularizer = method_.regularizer().kind();
  // θ_{-1} = θ_0: at the first step the previous parameters are the initial ones.
  if (target == Target::kPrevious || regularizer == Regularizer::kTRPO) previous_ = clone_all(all);
  if (target == Target::kPretrained) pretrained_ = clone_all(all);
  if (regularizer == Regularizer::kMESA) ema_ = clone_all(all);
}

std::vector<double> SharpnessAware::fixed_radii() const {
  std::vector<double> radii;
  for (const auto& g : param_groups_) radii.push_back(static_cast<const GroupOptions&>(g.options()).rho());
  return radii;
}

void SharpnessAware::ascend(const std::vector<double>& radii, StepReport& report) {
  torch::NoGradGuard no_grad;
  report.radius = radii;
  Managed m = managed_parameters(/*with_grad_only=*/true);
  ops::AscentSpec spec;
  spec.scaling = scaling_of(method_);
  for (size_t i = 0; i < m.params.size(); ++i) {
    const auto& options = static_cast<const GroupOptions&>(param_groups_[m.group[i]].options());
    spec.eta.push_back(method_.ascent() == Ascent::kFisher ? options.fisher_eta() : options.eta());
  }
  const double squared = ops::squared_norm(m.params, m.grads, spec).item<double>();
  report.ascent_norm = std::sqrt(squared);
  if (!std::isfinite(squared)) {
    // A loss-scaled fp16 pass may overflow: no ascent, the step proceeds as a
    // plain base step, and the event is counted.
    report.ascent_skipped = true;
    ++skipped_ascents_;
    return;
  }
  // SAM/ASAM divide by (norm + eps); FSAM by sqrt(squared norm + eps) (SPEC 2).
  const double norm = method_.ascent() == Ascent::kFisher ? std::sqrt(squared + method_.eps_norm())
                                                         : report.ascent_norm + method_.eps_norm();
  for (size_t i = 0; i < m.params.size(); ++i) spec.coef.push_back(radii[m.group[i]] / norm);

  if (anchor_active_) {
    // An exact copy of w already exists (θt-1's buffer after the swap, or the
    // backup made for a target pass): perturb from it, write nothing else.
    std::vector<Tensor> sources;
    for (size_t k : m.index) sources.push_back(anchor_[k]);
    ops::ascend_from(m.params, sources, m.grads, spec);
    return;
  }
  const size_t total = managed_parameters(false).params.size();
  std::vector<Tensor> anchor_params(total), anchor(total), backups;
  for (size_t i = 0; i < m.params.size(); ++i) {
    backups.push_back(backup_for(m.index[i], m.params[i]));
    anchor[m.index[i]] = backups.back();
    anchor_params[m.index[i]] = m.params[i];
  }
  ops::ascend_with_backup(m.params, m.grads, backups, spec);
  set_anchor(anchor_params, anchor);
}

// The restore buffer of managed parameter k, allocated once and reused.
Tensor SharpnessAware::backup_for(size_t k, const Tensor& param) {
  if (backup_.size() <= k) backup_.resize(k + 1);
  Tensor& b = backup_[k];
  if (!b.defined() || b.sizes() != param.sizes() || b.dtype() != param.dtype() || b.device() != param.device()) {
    b = torch::empty_like(param, torch::MemoryFormat::Preserve);
  }
  return b;
}

void SharpnessAware::restore() {
  torch::NoGradGuard no_grad;
  if (swapped_with_previous_) {
    // Interrupted while w held θt-1: swapping back restores both sets exactly.
    ops::swap(managed_parameters(false).params, previous_);
    swapped_with_previous_ = false;
  }
  if (!anchor_active_) return;
  std::vector<Tensor> dst, src;
  for (size_t k = 0; k < anchor_.size(); ++k) {
    if (anchor_[k].defined()) {
      dst.push_back(anchor_params_[k]);
      src.push_back(anchor_[k]);
    }
  }
  ops::copy(dst, src);
  anchor_active_ = false;
  anchor_.clear();
  anchor_params_.clear();
}

// Makes `set` the exact copy of w that restore() returns to.
void SharpnessAware::set_anchor(const std::vector<Tensor>& params, const std::vector<Tensor>& set) {
  anchor_params_ = params;
  anchor_ = set;
  anchor_active_ = true;
}

void SharpnessAware::base_step() {
  base_->step();
  if (!ema_.empty()) {
    // MESA's teacher follows the parameters after every base step.
    torch::NoGradGuard no_grad;
    torch::_foreach_lerp_(ema_, managed_parameters(false).params, 1.0 - method_.regularizer().ema_decay());
  }
  if (scaler_) scaler_->update(/*found_inf=*/false);
  ++step_count_;
}

// ---------------------------------------------------------------------------
// Gradient hooks: data parallelism, loss scaling, clipping. Every step form
// (LossClosure, ForwardClosure, first_step/second_step) goes through these.
// ---------------------------------------------------------------------------

SharpnessAware::~SharpnessAware() = default;

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
  torch::NoGradGuard no_grad;
  std::vector<Tensor> tensors = managed_parameters(false).params;
  for (auto* set : {&previous_, &pretrained_, &ema_}) tensors.insert(tensors.end(), set->begin(), set->end());
  for (auto& t : tensors) {
    std::vector<Tensor> one{t};
    collective(method_.name(), "parameter broadcast", [&] { return process_group_->broadcast(one); });
  }
}

void SharpnessAware::all_reduce_mean(const std::vector<Tensor>& tensors) const {
  if (!process_group_ || tensors.empty()) return;
  torch::NoGradGuard no_grad;
  // One flat buffer per dtype: one collective instead of one per tensor.
  std::map<c10::ScalarType, std::vector<Tensor>> by_dtype;
  for (const auto& t : tensors) by_dtype[t.scalar_type()].push_back(t);
  const double world = process_group_->getSize();
  for (auto& [dtype, group] : by_dtype) {
    std::vector<Tensor> pieces;
    for (const auto& t : group) pieces.push_back(t.reshape({-1}));
    std::vector<Tensor> flat{torch::cat(pieces)};
    collective(method_.name(), "gradient all-reduce", [&] { return process_group_->allreduce(flat); });
    flat[0].div_(world);
    int64_t offset = 0;
    for (auto& t : group) {
      t.copy_(flat[0].narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

bool SharpnessAware::prepare_ascent_gradient() {
  auto grads = managed_parameters(true).grads;
  if (ascent_scope_ == AscentScope::kGlobal) all_reduce_mean(grads);
  if (!scaler_) return true;
  bool found_inf = scaler_->unscale(grads);
  if (process_group_ && ascent_scope_ == AscentScope::kPerRank) {
    // Each rank checked its own gradient; all must agree to skip.
    const auto device = grads.empty() ? torch::Device(torch::kCPU) : grads[0].device();
    std::vector<Tensor> flag{torch::tensor({found_inf ? 1.0 : 0.0}, torch::TensorOptions(torch::kFloat64).device(device))};
    collective(method_.name(), "inf/NaN all-reduce", [&] { return process_group_->allreduce(flag); });
    found_inf = flag[0].item<double>() > 0;
  }
  return !found_inf;
}

bool SharpnessAware::prepare_descent_gradient() {
  auto grads = managed_parameters(true).grads;
  all_reduce_mean(grads);
  if (scaler_ && scaler_->unscale(grads)) return false;
  if (max_grad_norm_) {
    torch::NoGradGuard no_grad;
    torch::nn::utils::clip_grad_norm_(managed_parameters(true).params, *max_grad_norm_);
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

// ---------------------------------------------------------------------------
// The LibTorch closure and the two-call API.
// ---------------------------------------------------------------------------

namespace {
// Autocast keeps the low-precision copy of every fp32 leaf parameter it casts
// until the outermost autocast region ends (Python's autocast.__exit__; C++
// code calls at::autocast::clear_cache()). The engine changes w in place
// between the passes of one step (ascent, target parameter sets, restore) and
// the base step changes it between steps, so under an autocast region that
// spans step(), a cached copy would make pass 2 see w instead of w + e and
// every pass see the weights of the first cast. The cache is therefore
// dropped before every pass; the casts are redone from the current w.
void drop_autocast_cache() { at::autocast::clear_cache(); }
}  // namespace

Tensor SharpnessAware::step(LossClosure closure) {
  const auto& n = method_.name();
  TORCH_CHECK(closure, n, ": step() needs a closure that zeroes the gradients, runs forward and backward and "
              "returns the loss (or use first_step()/second_step())");
  TORCH_CHECK(!method_.needs_forward_closure(), n, " needs the model's logits: call step() with a "
              "tram::ForwardClosure (it returns loss and logits of each pass) instead of a LossClosure");
  TORCH_CHECK(!anchor_active_, n, ": step() called while first_step() left w perturbed; call second_step() or restore()");
  sync_groups();
  validate();
  Tensor loss;
  {
    torch::AutoGradMode enable_grad(true);
    drop_autocast_cache();
    loss = closure();
  }
  StepReport report;
  if (loss.defined() && loss.numel() == 1) report.loss = loss.detach().item<double>();
  report.passes = 1;
  if (method_.ascent() != Ascent::kNone) {
    if (!prepare_ascent_gradient()) {
      skip_step(report);
      return loss;
    }
    ascend(fixed_radii(), report);
    {
      auto put_back = c10::make_scope_exit([this] { restore(); });
      torch::AutoGradMode enable_grad(true);
      drop_autocast_cache();
      closure();
    }
    report.passes = 2;
  }
  descend(report);
  return loss;
}

void SharpnessAware::first_step(std::optional<double> trust_region_distance) {
  const auto& n = method_.name();
  TORCH_CHECK(method_.ascent() != Ascent::kNone, n, " has no ascent; first_step() is for sharpness-aware methods");
  TORCH_CHECK(!anchor_active_, n, ": first_step() called twice without second_step(); call second_step() or restore()");
  TORCH_CHECK(method_.regularizer().kind() == Regularizer::kNone && !method_.noisy_first_pass(), n,
              ": first_step()/second_step() cannot run the extra passes of this method; use step(ForwardClosure)");
  sync_groups();
  validate();
  StepReport report;
  std::vector<double> radii;
  if (method_.radius() == RadiusSource::kTrustRegion) {
    const auto target = method_.trust_region().target();
    TORCH_CHECK(target == Target::kNoise, n, ": the trust-region target at other parameters (θt-1, θ0) needs the "
                "target passes of step(ForwardClosure); first_step(d) supports target=noise only");
    TORCH_CHECK(trust_region_distance && std::isfinite(*trust_region_distance) && *trust_region_distance >= 0, n,
                ": first_step(d) needs this step's trust-region distance d >= 0 (got ",
                trust_region_distance ? std::to_string(*trust_region_distance) : std::string("none"), ")");
    report.distance = *trust_region_distance;
    radii.assign(param_groups_.size(), trust_region_radius(*trust_region_distance));
  } else {
    TORCH_CHECK(!trust_region_distance, n, " has a fixed radius; first_step() takes no distance");
    radii = fixed_radii();
  }
  if (!prepare_ascent_gradient()) {
    // w stays unperturbed; second_step() then skips the base step too.
    report.step_skipped = true;
    last_step_ = report;
    return;
  }
  ascend(radii, report);
  drop_autocast_cache();  // the caller's pass 2 must see w + e
  last_step_ = report;
}

void SharpnessAware::second_step() {
  // w changes (restore, base step): the caller's next pass must not see casts of the old w.
  auto drop = c10::make_scope_exit([] { drop_autocast_cache(); });
  StepReport report = last_step_;
  restore();
  if (report.step_skipped) {
    skip_step(report);
    return;
  }
  descend(report);
}

double SharpnessAware::trust_region_radius(double distance) const {
  const auto& tr = method_.trust_region();
  double radius = std::max(0.0, tr.scale() * distance);
  if (tr.max_radius()) radius = std::min(radius, *tr.max_radius());
  return radius;
}

// ---------------------------------------------------------------------------
// The forward-closure step: every pass a method needs, in one place.
// ---------------------------------------------------------------------------

namespace {
// The trust-region distance over micro-batches (and ranks) exactly as on the
// concatenated batch: per-row divergences are summed, then reduced once.
class DistanceAccumulator {
 public:
  DistanceAccumulator(ops::Divergence divergence, ops::Reduction reduction)
      : divergence_(divergence), reduction_(reduction) {}

  void add(const Tensor& target_logits, const Tensor& current_logits, const Tensor& mask) {
    const Tensor rows = ops::trust_region_divergence(target_logits, current_logits, divergence_,
                                                     ops::Reduction::kNone, mask);
    sum_ += rows.sum().item<double>();
    valid_rows_ += mask.defined() ? mask.ne(0).sum().item<double>() : static_cast<double>(rows.numel());
    numel_ += static_cast<double>(current_logits.numel());
    leading_ += current_logits.dim() > 1 ? static_cast<double>(current_logits.size(0)) : 1.0;
  }

  // Sums the accumulated quantities over the ranks of `group` (if any).
  void all_reduce(const c10::intrusive_ptr<c10d::Backend>& group, const std::string& method, torch::Device device) {
    if (!group) return;
    // On the parameters' device: NCCL reduces CUDA tensors only.
    std::vector<Tensor> totals{
        torch::tensor({sum_, valid_rows_, numel_, leading_}, torch::TensorOptions(torch::kFloat64).device(device))};
    collective(method, "trust-region distance all-reduce", [&] { return group->allreduce(totals); });
    auto values = totals[0].cpu();
    sum_ = values[0].item<double>();
    valid_rows_ = values[1].item<double>();
    numel_ = values[2].item<double>();
    leading_ = values[3].item<double>();
  }

  double value() const {
    switch (reduction_) {
      case ops::Reduction::kSum: return sum_;
      case ops::Reduction::kLegacy: return numel_ > 0 ? sum_ / numel_ / leading_ : 0.0;
      default: return valid_rows_ > 0 ? sum_ / valid_rows_ : 0.0;
    }
  }

 private:
  ops::Divergence divergence_;
  ops::Reduction reduction_;
  double sum_ = 0, valid_rows_ = 0, numel_ = 0, leading_ = 0;
};
}  // namespace

StepReport SharpnessAware::step(const ForwardClosure& forward) {
  const auto& n = method_.name();
  TORCH_CHECK(forward, n, ": step() needs a forward closure returning {loss, logits[, mask]}");
  TORCH_CHECK(!anchor_active_, n, ": step() called while first_step() left w perturbed; call second_step() or restore()");
  sync_groups();
  validate();

  StepReport report;
  const auto& tr = method_.trust_region();
  const auto& reg = method_.regularizer();
  const Target target = method_.radius() == RadiusSource::kTrustRegion ? tr.target() : Target::kNone;
  const int64_t k = micro_batches_;
  const std::vector<Tensor> all = managed_parameters(false).params;
  BufferSnapshot statistics;
  auto on_exit = c10::make_scope_exit([&] {
    restore();
    statistics.put_back();
  });

  // One forward pass. Passes that are not pass 1 and run in train mode have
  // the module's buffers put back after their backward, so BatchNorm
  // statistics come from pass 1 only.
  auto run = [&](PassKind kind, std::optional<NoiseOptions> noise, int64_t micro_batch,
                 bool updates_statistics = false) -> PassOutput {
    Pass pass(kind, std::move(noise), &noise_sampler_, micro_batch, k);
    ++report.passes;
    drop_autocast_cache();
    PassOutput out;
    if (kind == PassKind::kTarget) {
      EvalModeScope eval(module_.get());
      torch::NoGradGuard no_grad;
      out = forward(pass);
    } else {
      if (!updates_statistics) statistics.take(module_.get());
      torch::AutoGradMode enable_grad(true);
      out = forward(pass);
      TORCH_CHECK(out.loss.defined() && out.loss.numel() == 1, n, ": the forward closure returned no scalar loss on the ",
                  to_string(kind), " pass");
    }
    TORCH_CHECK(out.logits.defined() || (target == Target::kNone && reg.kind() == Regularizer::kNone), n,
                ": the forward closure returned no logits on the ", to_string(kind), " pass; ", n,
                " compares predictive distributions and needs them");
    return out;
  };

  // 1. Targets under no-grad, before pass 1 (the regularizers need them in
  //    its loss). Parameter-set targets are loaded into w and w is put back
  //    exactly: θt-1 by the swap trick (SPEC 3), θ0 and the EMA by copies.
  auto target_logits = [&](std::optional<NoiseOptions> noise) {
    std::vector<Tensor> logits;
    for (int64_t i = 0; i < k; ++i) logits.push_back(run(PassKind::kTarget, noise, i).logits);
    return logits;
  };
  std::vector<Tensor> previous_logits, pretrained_logits, ema_logits, noise_logits;
  if (!previous_.empty()) {
    torch::NoGradGuard no_grad;
    ops::swap(all, previous_);  // w = θt-1, previous_ = θt
    swapped_with_previous_ = true;
    previous_logits = target_logits(std::nullopt);
    ops::copy(all, previous_);  // w = θt; previous_ now holds θt, next step's θt-1
    swapped_with_previous_ = false;
    set_anchor(all, previous_);
  }
  for (auto* set : {&pretrained_, &ema_}) {
    if (set->empty()) continue;
    torch::NoGradGuard no_grad;
    if (!anchor_active_) {
      std::vector<Tensor> backups;
      for (size_t i = 0; i < all.size(); ++i) backups.push_back(backup_for(i, all[i]));
      ops::copy(backups, all);
      set_anchor(all, backups);
    }
    ops::copy(all, *set);
    (set == &pretrained_ ? pretrained_logits : ema_logits) = target_logits(std::nullopt);
    ops::copy(all, anchor_);
  }
  if (target == Target::kNoise && !method_.noisy_first_pass()) noise_logits = target_logits(tr.noise());

  // The regularized loss of a pass on micro-batch i (SPEC 5); R3F runs its own noised pass.
  auto regularized = [&](const PassOutput& out, int64_t i, bool perturbed) -> std::pair<Tensor, Tensor> {
    Tensor r;
    switch (reg.kind()) {
      case Regularizer::kNone:
        return {out.loss, Tensor()};
      case Regularizer::kTRPO:
        r = ops::trust_region_divergence(previous_logits[i], out.logits, ops::Divergence::kForward,
                                         ops::Reduction::kMean, out.mask);
        break;
      case Regularizer::kMESA: {
        const double tau = reg.temperature();
        r = tau * tau * ops::trust_region_divergence(ema_logits[i] / tau, out.logits / tau, ops::Divergence::kForward,
                                                     ops::Reduction::kMean, out.mask);
        break;
      }
      case Regularizer::kR3F: {
        auto noisy = run(perturbed ? PassKind::kPerturbedNoisy : PassKind::kNoisy, reg.noise(), i);
        r = ops::trust_region_divergence(out.logits, noisy.logits, ops::Divergence::kSymmetric, ops::Reduction::kMean,
                                         out.mask);
        break;
      }
    }
    return {out.loss + reg.lambda() * r.to(out.loss.dtype()), r};
  };
  // Accumulates the gradient of one micro-batch's (scaled) loss.
  auto backward = [&](const Tensor& loss) {
    torch::AutoGradMode enable_grad(true);
    Tensor weighted = k > 1 ? loss / static_cast<double>(k) : loss;
    (scaler_ ? scaler_->scale(weighted) : weighted).backward();
    statistics.put_back();
  };

  // 2. Pass 1 at w, on clean inputs (on noised ones for TRAM-Fisher), over
  //    the micro-batches; the logits are kept (detached) for the distance.
  std::vector<PassOutput> first(k);
  zero_grad();
  double loss_sum = 0, regularizer_sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    first[i] = method_.noisy_first_pass() ? run(PassKind::kNoisy, tr.noise(), i, /*updates_statistics=*/true)
                                          : run(PassKind::kClean, std::nullopt, i, /*updates_statistics=*/true);
    auto [loss, r] = regularized(first[i], i, /*perturbed=*/false);
    backward(loss);
    loss_sum += first[i].loss.detach().item<double>();
    if (r.defined()) regularizer_sum += r.detach().item<double>();
    first[i].loss = Tensor();
    if (first[i].logits.defined()) first[i].logits = first[i].logits.detach();
  }
  report.loss = loss_sum / static_cast<double>(k);
  report.regularizer = regularizer_sum / static_cast<double>(k);

  if (method_.ascent() != Ascent::kNone) {
    if (!prepare_ascent_gradient()) {
      on_exit.release();
      skip_step(report);
      return report;
    }
    // 3. Radius: fixed, or from the trust-region distance of this batch.
    std::vector<double> radii = fixed_radii();
    if (target != Target::kNone) {
      DistanceAccumulator distance(tr.divergence(), tr.reduction());
      for (int64_t i = 0; i < k; ++i) {
        const Tensor& current = first[i].logits;
        switch (target) {
          case Target::kPrevious: distance.add(previous_logits[i], current, first[i].mask); break;
          case Target::kPretrained: distance.add(pretrained_logits[i], current, first[i].mask); break;
          case Target::kNoise:
            if (method_.noisy_first_pass()) {
              // TRAM-Fisher: pass 1 already saw the noise; compare with the clean model.
              distance.add(current, run(PassKind::kTarget, std::nullopt, i).logits, first[i].mask);
            } else {
              distance.add(noise_logits[i], current, first[i].mask);
            }
            break;
          case Target::kNone: break;
        }
      }
      distance.all_reduce(process_group_, n, all.empty() ? torch::Device(torch::kCPU) : all[0].device());
      report.distance = distance.value();
      radii.assign(param_groups_.size(), trust_region_radius(report.distance));
    }
    // 4. Ascent, then pass 2 at w + e on clean inputs.
    ascend(radii, report);
    zero_grad();
    for (int64_t i = 0; i < k; ++i) {
      auto second = run(PassKind::kPerturbed, std::nullopt, i);
      backward(regularized(second, i, /*perturbed=*/true).first);
    }
  } else {
    report.radius.assign(param_groups_.size(), 0.0);
  }

  // 5. Exact restore, then the base step with the descent gradient.
  on_exit.release();
  restore();
  descend(report);
  return report;
}

// ---------------------------------------------------------------------------
// Serialization: the wrapper's own state, then the base's in a sub-archive.
// ---------------------------------------------------------------------------

namespace {
// Version 1: the state below directly in the archive. Version 2 (written
// now): the version-1 state serialized into a byte payload, stored with its
// length and FNV-1a checksum next to the method's name, so that a damaged
// archive (a flipped bit in a tensor, which LibTorch's reader does not
// detect) is rejected instead of silently loaded. Both are read.
constexpr int64_t kArchiveVersion = 2;

uint64_t fnv1a(const uint8_t* data, size_t size) {
  uint64_t hash = 14695981039346656037ull;
  for (size_t i = 0; i < size; ++i) {
    hash ^= data[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

// Reads one entry, naming it when it is missing (a truncated or damaged
// archive, or one that tram's save() did not write).
template <typename T>
void read_entry(torch::serialize::InputArchive& archive, const std::string& key, T& value) {
  TORCH_CHECK(archive.try_read(key, value), "the archive has no entry '", key,
              "' (truncated or damaged, or not written by a tram optimizer's save())");
}

int64_t read_int(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  read_entry(archive, key, value);
  TORCH_CHECK(value.isInt(), "entry '", key, "' is a ", value.tagKind(), ", expected an integer (damaged archive?)");
  return value.toInt();
}

double read_double(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  read_entry(archive, key, value);
  TORCH_CHECK(value.isDouble(), "entry '", key, "' is a ", value.tagKind(), ", expected a number (damaged archive?)");
  return value.toDouble();
}

std::string read_string(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  read_entry(archive, key, value);
  TORCH_CHECK(value.isString(), "entry '", key, "' is a ", value.tagKind(), ", expected a string (damaged archive?)");
  return value.toStringRef();
}

void write_set(torch::serialize::OutputArchive& archive, const std::string& name, const std::vector<Tensor>& set) {
  archive.write("tram/" + name + "/size", c10::IValue(static_cast<int64_t>(set.size())));
  for (size_t i = 0; i < set.size(); ++i) archive.write("tram/" + name + "/" + std::to_string(i), set[i], true);
}

// Reads a parameter-sized buffer into new tensors, checking it against `set`
// (nothing is copied into the optimizer here).
std::vector<Tensor> read_set(torch::serialize::InputArchive& archive, const std::string& name,
                             const std::vector<Tensor>& set) {
  const int64_t size = read_int(archive, "tram/" + name + "/size");
  TORCH_CHECK(size >= 0 && static_cast<size_t>(size) == set.size(), "the checkpoint's '", name, "' buffer has ", size,
              " tensors but this optimizer manages ", set.size(),
              " parameters; load it into an optimizer built over the same parameters");
  std::vector<Tensor> values;
  for (size_t i = 0; i < set.size(); ++i) {
    Tensor value;
    read_entry(archive, "tram/" + name + "/" + std::to_string(i), value);
    TORCH_CHECK(value.sizes() == set[i].sizes(), "checkpoint tensor tram/", name, "/", i, " has shape ",
                value.sizes(), " but the parameter has shape ", set[i].sizes());
    values.push_back(std::move(value));
  }
  return values;
}
}  // namespace

void SharpnessAware::save(torch::serialize::OutputArchive& archive) const {
  TORCH_CHECK(!anchor_active_, method_.name(), ": save() while the parameters are perturbed (between first_step() and "
              "second_step()); save after second_step()");
  // The version-1 layout, into the payload.
  torch::serialize::OutputArchive state;
  state.write("tram/method", c10::IValue(method_.name()));
  state.write("tram/step_count", c10::IValue(step_count_));
  state.write("tram/skipped_ascents", c10::IValue(skipped_ascents_));
  state.write("tram/skipped_steps", c10::IValue(skipped_steps_));
  if (scaler_) {
    torch::serialize::OutputArchive scaler(state.compilation_unit());
    scaler_->save(scaler);
    state.write("tram/scaler", scaler);
  }
  state.write("tram/groups", c10::IValue(static_cast<int64_t>(param_groups_.size())));
  for (size_t i = 0; i < param_groups_.size(); ++i) {
    torch::serialize::OutputArchive group(state.compilation_unit());
    param_groups_[i].options().serialize(group);
    state.write("tram/group/" + std::to_string(i), group);
  }
  write_set(state, "previous", previous_);
  write_set(state, "pretrained", pretrained_);
  write_set(state, "ema", ema_);
  torch::serialize::OutputArchive base(state.compilation_unit());
  base_->save(base);
  state.write("base", base);

  std::string bytes;
  state.save_to([&bytes](const void* data, size_t size) {
    bytes.append(static_cast<const char*>(data), size);
    return size;
  });
  Tensor payload = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(payload.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  const uint64_t checksum = fnv1a(payload.data_ptr<uint8_t>(), bytes.size());
  archive.write("tram/version", c10::IValue(kArchiveVersion));
  archive.write("tram/method", c10::IValue(method_.name()));
  archive.write("tram/payload", payload, true);
  archive.write("tram/payload_size", c10::IValue(static_cast<int64_t>(bytes.size())));
  archive.write("tram/payload_fnv1a", c10::IValue(static_cast<int64_t>(checksum)));
}

void SharpnessAware::load(torch::serialize::InputArchive& archive) {
  const auto& n = method_.name();
  restore();
  sync_groups();
  // Everything is read and checked before anything changes: a rejected
  // checkpoint leaves the optimizer as it was (the base optimizer's own
  // load() comes last, and LibTorch's also reads everything first).
  try {
    const int64_t version = read_int(archive, "tram/version");
    TORCH_CHECK(version == 1 || version == kArchiveVersion, "unsupported tram checkpoint version ", version,
                " (this build reads versions 1 and ", kArchiveVersion, ")");
    const std::string method = read_string(archive, "tram/method");
    TORCH_CHECK(method == n, "the checkpoint was written by a ", method, " optimizer; load it into a ", method,
                " optimizer");
    torch::serialize::InputArchive payload_archive;
    torch::serialize::InputArchive* state = &archive;
    if (version >= 2) {
      Tensor payload;
      read_entry(archive, "tram/payload", payload);
      const int64_t size = read_int(archive, "tram/payload_size");
      const auto expected = static_cast<uint64_t>(read_int(archive, "tram/payload_fnv1a"));
      TORCH_CHECK(payload.scalar_type() == torch::kUInt8 && payload.dim() == 1 && payload.numel() == size,
                  "the state payload has ", payload.numel(), " bytes of ", payload.scalar_type(), ", expected ", size,
                  " bytes of Byte (truncated or damaged archive)");
      payload = payload.cpu().contiguous();
      const uint64_t actual = fnv1a(payload.data_ptr<uint8_t>(), static_cast<size_t>(size));
      TORCH_CHECK(actual == expected, "checksum mismatch in the state payload (FNV-1a ", actual, ", saved ", expected,
                  "): the archive is damaged");
      // Onto the parameters' device, as the outer archive's tensors would be.
      std::optional<torch::Device> device;
      const auto params = managed_parameters(false).params;
      if (!params.empty()) device = params[0].device();
      payload_archive.load_from(reinterpret_cast<const char*>(payload.data_ptr<uint8_t>()),
                                static_cast<size_t>(size), device);
      state = &payload_archive;
      TORCH_CHECK(read_string(*state, "tram/method") == n, "the state payload names another method");
    }
    const int64_t groups = read_int(*state, "tram/groups");
    TORCH_CHECK(groups >= 0 && static_cast<size_t>(groups) == param_groups_.size(), "the checkpoint has ", groups,
                " parameter groups, this optimizer ", param_groups_.size());
    std::vector<std::array<double, 3>> options;  // rho, eta, fisher_eta per group
    for (size_t i = 0; i < param_groups_.size(); ++i) {
      torch::serialize::InputArchive group;
      read_entry(*state, "tram/group/" + std::to_string(i), group);
      options.push_back({read_double(group, "rho"), read_double(group, "eta"), read_double(group, "fisher_eta")});
    }
    auto previous = read_set(*state, "previous", previous_);
    auto pretrained = read_set(*state, "pretrained", pretrained_);
    auto ema = read_set(*state, "ema", ema_);
    const int64_t step_count = read_int(*state, "tram/step_count");
    const int64_t skipped_ascents = read_int(*state, "tram/skipped_ascents");
    const int64_t skipped_steps = read_int(*state, "tram/skipped_steps");
    torch::serialize::InputArchive scaler;
    const bool has_scaler = state->try_read("tram/scaler", scaler);
    TORCH_CHECK(has_scaler == (scaler_ != nullptr), "the checkpoint ", has_scaler ? "has" : "has no",
                " loss-scaler state but this optimizer ", scaler_ ? "has" : "has no",
                " GradScaler attached; attach one (set_grad_scaler) before load() exactly when the run used one");
    torch::serialize::InputArchive base;
    read_entry(*state, "base", base);

    base_->load(base);
    if (scaler_) scaler_->load(scaler);
    for (size_t i = 0; i < param_groups_.size(); ++i) {
      group_options(i).rho(options[i][0]).eta(options[i][1]).fisher_eta(options[i][2]);
    }
    torch::NoGradGuard no_grad;
    using Pair = std::pair<std::vector<Tensor>*, const std::vector<Tensor>*>;
    for (const auto& [set, values] : {Pair{&previous_, &previous}, Pair{&pretrained_, &pretrained}, Pair{&ema_, &ema}}) {
      for (size_t i = 0; i < set->size(); ++i) (*set)[i].copy_((*values)[i]);
    }
    step_count_ = step_count;
    skipped_ascents_ = skipped_ascents;
    skipped_steps_ = skipped_steps;
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "tram ", n, ": cannot load optimizer state: ", e.msg());
  }
}

}  // namespace tram
