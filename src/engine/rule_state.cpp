#include "engine/rule_state.h"

#include "engine/archive.h"

#include <c10/util/Exception.h>

namespace tram::detail {

using torch::Tensor;

RuleState::RuleState(std::shared_ptr<const policy::GradientRule> rule, size_t total)
    : rule_(std::move(rule)), total_(total) {
  if (!rule_) return;
  for (const auto& name : rule_->state_names()) state_[name].resize(total_);
  if (rule_->keeps_first_gradient()) {
    first_.resize(total_);
    first_set_.assign(total_, false);
  }
}

void RuleState::begin_step() {
  phase_ = Phase::kWithoutAscent;
  scratch_.clear();
  std::fill(first_set_.begin(), first_set_.end(), false);
}

void RuleState::keep_first_gradient(const std::vector<Tensor>& grads, const std::vector<size_t>& index) {
  if (!rule_ || !rule_->keeps_first_gradient()) return;
  torch::NoGradGuard no_grad;
  for (size_t j = 0; j < grads.size(); ++j) {
    Tensor& kept = first_.at(index[j]);
    const Tensor& g = grads[j];
    if (!kept.defined() || kept.sizes() != g.sizes() || kept.options().dtype() != g.options().dtype() ||
        kept.device() != g.device()) {
      kept = torch::empty_like(g, torch::MemoryFormat::Preserve);
    }
    kept.copy_(g);
    first_set_[index[j]] = true;
  }
}

std::vector<Tensor> RuleState::first_gradient(const std::vector<Tensor>& grads,
                                              const std::vector<size_t>& index) const {
  std::vector<Tensor> aligned;
  if (first_.empty()) return aligned;
  for (size_t j = 0; j < index.size(); ++j) {
    aligned.push_back(first_set_[index[j]] ? first_[index[j]] : torch::zeros_like(grads[j]));
  }
  return aligned;
}

std::vector<Tensor> RuleState::kept_first_gradient() const {
  std::vector<Tensor> kept;
  for (size_t i = 0; i < first_.size(); ++i) {
    if (first_set_[i]) kept.push_back(first_[i]);
  }
  return kept;
}

void RuleState::warn_once(const std::string& message) {
  if (warned_) return;
  warned_ = true;
  TORCH_WARN(message);
}

std::vector<Tensor> RuleState::tensors() const {
  std::vector<Tensor> all;
  for (const auto& [name, entries] : state_) {
    for (const auto& t : entries) {
      if (t.defined()) all.push_back(t);
    }
  }
  return all;
}

void RuleState::save(torch::serialize::OutputArchive& archive) const {
  for (const auto& [name, entries] : state_) {
    const std::string prefix = "tram/rule/" + name + "/";
    archive.write(prefix + "size", c10::IValue(static_cast<int64_t>(entries.size())));
    for (size_t i = 0; i < entries.size(); ++i) {
      archive.write(prefix + std::to_string(i) + "/set", c10::IValue(entries[i].defined()));
      if (entries[i].defined()) archive.write(prefix + std::to_string(i), entries[i], true);
    }
  }
}

policy::RuleBuffers RuleState::read(torch::serialize::InputArchive& archive,
                                    const std::vector<Tensor>& params) const {
  policy::RuleBuffers staged;
  for (const auto& [name, entries] : state_) {
    const std::string prefix = "tram/rule/" + name + "/";
    const int64_t size = read_int(archive, prefix + "size");
    TORCH_CHECK(size >= 0 && static_cast<size_t>(size) == entries.size() && entries.size() == params.size(),
                "the checkpoint's '", name, "' state has ", size, " tensors but this optimizer manages ",
                params.size(), " parameters; load it into an optimizer built over the same parameters");
    auto& values = staged[name];
    values.resize(entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      c10::IValue set;
      read_entry(archive, prefix + std::to_string(i) + "/set", set);
      TORCH_CHECK(set.isBool(), "entry '", prefix, i, "/set' is a ", set.tagKind(),
                  ", expected a boolean (damaged archive?)");
      if (!set.toBool()) continue;
      read_entry(archive, prefix + std::to_string(i), values[i]);
      TORCH_CHECK(values[i].sizes() == params[i].sizes(), "checkpoint tensor ", prefix, i, " has shape ",
                  values[i].sizes(), " but the parameter has shape ", params[i].sizes());
    }
  }
  return staged;
}

}  // namespace tram::detail
