// The option types: per-group options (with the learning rate linked to the
// base optimizer), the pass descriptor, and the validation of a method.
#include <tram/closure.h>
#include <tram/method.h>
#include <tram/options.h>

#include <torch/optim/serialize.h>

#include <cmath>

namespace tram {

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
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(rho);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(eta);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(fisher_eta);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(perturb);
}

void GroupOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, rho);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, eta);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, fisher_eta);
  // Archives written before SAM-ON have no "perturb": every group was perturbed.
  c10::IValue perturb;
  perturb_ = !archive.try_read("perturb", perturb) || perturb.toBool();
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
    case PassKind::kSelection: return "selection";
  }
  return "?";
}

torch::Tensor Pass::select(const torch::Tensor& batch) const {
  if (!rows_.defined()) return batch;
  TORCH_CHECK(batch.dim() >= 1, "tram: Pass::select needs a batch tensor with the rows in dim 0, got a scalar");
  return batch.index_select(0, rows_.to(batch.device()));
}

torch::Tensor Pass::perturb(const torch::Tensor& embeddings) const {
  if (!noise_) return embeddings;
  torch::Tensor noise = (*sampler_)(embeddings, *noise_, *this);
  TORCH_CHECK(noise.sizes() == embeddings.sizes(), "tram: the noise sampler returned shape ", noise.sizes(),
              " for embeddings of shape ", embeddings.sizes(), "; it must return noise of the embeddings' shape");
  return embeddings + noise.to(embeddings.options());
}

// ---------------------------------------------------------------------------
// MethodConfig
// ---------------------------------------------------------------------------

bool MethodConfig::needs_forward_closure() const {
  return trust_region() != nullptr || regularizer_ != nullptr || first_pass_noise_.has_value();
}

void MethodConfig::validate() const {
  const auto& n = name_;
  TORCH_CHECK(eps_norm_ > 0 && std::isfinite(eps_norm_), n, ": invalid eps_norm: ", eps_norm_,
              " (must be a positive number, default 1e-12)");
  TORCH_CHECK(interval_ >= 1, n, ": invalid interval: ", interval_,
              " (must be an integer >= 1: the ascent runs every interval-th step)");
  TORCH_CHECK(radius_ != nullptr, n, ": no radius policy; use tram::policy::fixed_radius() for each group's rho");
  if (const auto* region = trust_region()) {
    TORCH_CHECK(direction_ != nullptr, n, ": a trust-region radius needs an ascent");
    TORCH_CHECK(region->target != nullptr && region->distance != nullptr, n,
                ": a trust-region radius needs a target (previous, pretrained, noise) and a distance");
    region->target->validate(n);
  }
  radius_->validate(n);
  if (first_pass_noise_) {
    TORCH_CHECK(first_pass_noise_->sigma() >= 0 && std::isfinite(first_pass_noise_->sigma()), n,
                ": invalid sigma: ", first_pass_noise_->sigma(), " (the embedding noise scale must be >= 0)");
  }
  if (regularizer_) regularizer_->validate(n);
  if (gradient_rule_) {
    TORCH_CHECK(direction_ != nullptr, n, ": a gradient rule shapes an ascent; the method has none");
    gradient_rule_->validate(n);
  }
}

}  // namespace tram
