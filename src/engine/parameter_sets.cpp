#include "engine/parameter_sets.h"

#include "engine/archive.h"

#include <torch/autograd.h>

#include <algorithm>
#include <cmath>

namespace tram::detail {

using torch::Tensor;

namespace {
std::vector<Tensor> clone_all(const std::vector<Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  std::vector<Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.detach().clone());
  return out;
}
}  // namespace

ParameterSets::ParameterSets(const std::vector<std::shared_ptr<const policy::ParameterSet>>& sets,
                             const std::vector<Tensor>& params) {
  for (const auto& set : sets) {
    const std::string name = set->name();
    const bool known = std::any_of(sets_.begin(), sets_.end(), [&](const Set& s) { return s.name == name; });
    if (!known) sets_.push_back({name, set, clone_all(params)});
  }
  std::stable_partition(sets_.begin(), sets_.end(), [](const Set& s) { return s.policy->tracks_previous_step(); });
}

void ParameterSets::evaluate_at(size_t index, const std::vector<Tensor>& params, const std::function<void()>& run) {
  torch::NoGradGuard no_grad;
  Set& set = sets_.at(index);
  if (set.policy->tracks_previous_step()) {
    // The swap trick: w = θt-1 and the set = θt for the pass; then w = θt
    // again, and the set, now θt, is both w's exact copy and next step's θt-1.
    TORCH_INTERNAL_ASSERT(!anchor_active_, "tram: the previous-step set must be evaluated first");
    ops::swap(params, set.tensors);
    swapped_params_ = params;
    swapped_set_ = &set;
    run();
    ops::copy(params, set.tensors);
    swapped_params_.clear();
    swapped_set_ = nullptr;
    set.holds_current = true;
    set_anchor(params, set.tensors);
    return;
  }
  if (!anchor_active_) {
    std::vector<Tensor> backups;
    for (size_t i = 0; i < params.size(); ++i) backups.push_back(backup_for(i, params[i]));
    ops::copy(backups, params);
    set_anchor(params, backups);
  }
  ops::copy(params, set.tensors);
  run();
  ops::copy(params, anchor_);
}

namespace {
// ||w + e - w|| over all tensors, accumulated in fp64, left on the device
// (the report reads it only if asked).
ReportValue applied_norm(const std::vector<Tensor>& perturbed, const std::vector<Tensor>& sources) {
  if (perturbed.empty()) return 0.0;
  return ReportValue::on_device(ops::squared_distance(perturbed, sources).sqrt());
}
}  // namespace

ReportValue ParameterSets::perturb(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                              const std::vector<size_t>& index, size_t total, const ops::AscentSpec& spec) {
  torch::NoGradGuard no_grad;
  if (anchor_active_) {
    // An exact copy of w already exists (θt-1's buffer after the swap, or the
    // backup made for a parameter-set pass): perturb from it, write nothing else.
    std::vector<Tensor> sources;
    for (size_t k : index) sources.push_back(anchor_[k]);
    ops::ascend_from(params, sources, grads, spec);
    return applied_norm(params, sources);
  }
  std::vector<Tensor> anchor_params(total), anchor(total), backups;
  for (size_t i = 0; i < params.size(); ++i) {
    backups.push_back(backup_for(index[i], params[i]));
    anchor[index[i]] = backups.back();
    anchor_params[index[i]] = params[i];
  }
  ops::ascend_with_backup(params, grads, backups, spec);
  set_anchor(std::move(anchor_params), std::move(anchor));
  return applied_norm(params, backups);
}

// The restore buffer of managed parameter k, allocated once and reused.
Tensor ParameterSets::backup_for(size_t k, const Tensor& param) {
  if (backup_.size() <= k) backup_.resize(k + 1);
  Tensor& b = backup_[k];
  if (!b.defined() || b.sizes() != param.sizes() || b.dtype() != param.dtype() || b.device() != param.device()) {
    b = torch::empty_like(param, torch::MemoryFormat::Preserve);
  }
  return b;
}

void ParameterSets::set_anchor(std::vector<Tensor> params, std::vector<Tensor> copies) {
  anchor_params_ = std::move(params);
  anchor_ = std::move(copies);
  anchor_active_ = true;
}

void ParameterSets::restore() {
  torch::NoGradGuard no_grad;
  if (swapped_set_ != nullptr) {
    // Interrupted while w held θt-1: swapping back restores both sets exactly.
    ops::swap(swapped_params_, swapped_set_->tensors);
    swapped_params_.clear();
    swapped_set_ = nullptr;
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

void ParameterSets::before_base_step(const std::vector<Tensor>& params) {
  torch::NoGradGuard no_grad;
  for (auto& set : sets_) {
    if (set.policy->tracks_previous_step()) {
      // A step that did not evaluate θt-1 (interval) must still leave it at
      // the parameters the base steps from: next step's θt-1.
      if (!set.holds_current) ops::copy(set.tensors, params);
      set.holds_current = false;
    }
    set.policy->before_base_step(set.tensors, params);
  }
}

void ParameterSets::after_base_step(const std::vector<Tensor>& params) {
  torch::NoGradGuard no_grad;
  for (auto& set : sets_) set.policy->after_base_step(set.tensors, params);
}

std::vector<Tensor> ParameterSets::tensors() const {
  std::vector<Tensor> all;
  for (const auto& set : sets_) all.insert(all.end(), set.tensors.begin(), set.tensors.end());
  return all;
}

void ParameterSets::save(torch::serialize::OutputArchive& archive) const {
  for (const auto& set : sets_) {
    const std::string prefix = "tram/" + set.name + "/";
    archive.write(prefix + "size", c10::IValue(static_cast<int64_t>(set.tensors.size())));
    for (size_t i = 0; i < set.tensors.size(); ++i) archive.write(prefix + std::to_string(i), set.tensors[i], true);
  }
}

ParameterSets::Staged ParameterSets::read(torch::serialize::InputArchive& archive) const {
  Staged staged;
  for (const auto& set : sets_) {
    const std::string prefix = "tram/" + set.name + "/";
    const int64_t size = read_int(archive, prefix + "size");
    TORCH_CHECK(size >= 0 && static_cast<size_t>(size) == set.tensors.size(), "the checkpoint's '", set.name,
                "' buffer has ", size, " tensors but this optimizer manages ", set.tensors.size(),
                " parameters; load it into an optimizer built over the same parameters");
    std::vector<Tensor> values;
    for (size_t i = 0; i < set.tensors.size(); ++i) {
      Tensor value;
      read_entry(archive, prefix + std::to_string(i), value);
      TORCH_CHECK(value.sizes() == set.tensors[i].sizes(), "checkpoint tensor tram/", set.name, "/", i,
                  " has shape ", value.sizes(), " but the parameter has shape ", set.tensors[i].sizes());
      values.push_back(std::move(value));
    }
    staged.push_back(std::move(values));
  }
  return staged;
}

void ParameterSets::commit(const Staged& staged) {
  torch::NoGradGuard no_grad;
  for (size_t s = 0; s < sets_.size(); ++s) {
    for (size_t i = 0; i < sets_[s].tensors.size(); ++i) sets_[s].tensors[i].copy_(staged[s][i]);
  }
}

}  // namespace tram::detail
