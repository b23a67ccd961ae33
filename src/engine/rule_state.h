// What the engine keeps for a method's gradient rule (policy::GradientRule,
// docs/ALGORITHMS.md §16): the rule's per-parameter buffers across steps
// (saved and loaded with the optimizer), its scratch for one step, the copy
// of pass 1's gradient g the descent may need, and which kind of step runs.
#pragma once

#include <tram/policy.h>

#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

namespace tram::detail {

class RuleState {
 public:
  // `total`: how many parameters the optimizer manages (the buffers' length).
  RuleState(std::shared_ptr<const policy::GradientRule> rule, size_t total);

  bool active() const { return rule_ != nullptr; }
  const policy::GradientRule* rule() const { return rule_.get(); }

  // A step begins: no ascent yet, empty scratch.
  void begin_step();
  // The ascent of this step ran with a finite norm, or was skipped.
  void mark_ascended(bool skipped) { phase_ = skipped ? Phase::kAscentSkipped : Phase::kAscended; }
  bool ascended() const { return phase_ == Phase::kAscended; }
  bool ascent_skipped() const { return phase_ == Phase::kAscentSkipped; }

  // Keeps a copy of g (entry j is managed parameter index[j]) in reused
  // buffers, when the rule needs it at the descent.
  void keep_first_gradient(const std::vector<torch::Tensor>& grads, const std::vector<size_t>& index);
  // The kept g aligned with `index` (zeros where a parameter had no pass-1 gradient).
  std::vector<torch::Tensor> first_gradient(const std::vector<torch::Tensor>& grads,
                                            const std::vector<size_t>& index) const;
  std::vector<torch::Tensor> kept_first_gradient() const;  // the defined ones (for all-reduce)

  policy::RuleBuffers* state() { return &state_; }
  policy::RuleBuffers* scratch() { return &scratch_; }

  // Says `message` once per optimizer (e.g. ESAM without per-row losses).
  void warn_once(const std::string& message);

  // Checkpoints: every defined buffer entry; read and check without changing
  // anything, then commit.
  void save(torch::serialize::OutputArchive& archive) const;
  policy::RuleBuffers read(torch::serialize::InputArchive& archive, const std::vector<torch::Tensor>& params) const;
  void commit(policy::RuleBuffers staged) { state_ = std::move(staged); }
  std::vector<torch::Tensor> tensors() const;  // the defined state entries (broadcast)

 private:
  enum class Phase { kWithoutAscent, kAscended, kAscentSkipped };
  std::shared_ptr<const policy::GradientRule> rule_;
  size_t total_;
  policy::RuleBuffers state_;
  policy::RuleBuffers scratch_;
  std::vector<torch::Tensor> first_;  // by managed index; reused from step to step
  std::vector<bool> first_set_;
  Phase phase_ = Phase::kWithoutAscent;
  bool warned_ = false;
};

}  // namespace tram::detail
