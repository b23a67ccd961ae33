// The one owner of the engine's parameter-sized buffers (docs/ALGORITHMS.md
// §1, §4): the restore copy, and the parameter sets the method's targets and
// regularizers evaluate the model at (θt-1 with its swap trick, θ0, the EMA
// teacher). While w is perturbed, or holds another set, the "anchor" is the
// exact copy of w that restore() puts back.
#pragma once

#include <tram/ops.h>
#include <tram/policy.h>

#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tram::detail {

class ParameterSets {
 public:
  // One buffer per distinct set name, each a copy of `params` (θ0). A set
  // that tracks the previous step is evaluated first: its pass makes it the
  // anchor the other sets' passes then reuse.
  ParameterSets(const std::vector<std::shared_ptr<const policy::ParameterSet>>& sets,
                const std::vector<torch::Tensor>& params);

  size_t size() const { return sets_.size(); }
  bool empty() const { return sets_.empty(); }
  const std::string& name(size_t set) const { return sets_[set].name; }

  // Loads set `set` into w (`params`, all managed parameters), calls `run`,
  // and leaves w as it was with the anchor active (restore() puts w back
  // exactly, also if `run` throws).
  void evaluate_at(size_t set, const std::vector<torch::Tensor>& params, const std::function<void()>& run);

  // w <- w + e for the parameters with a gradient (`index`: their positions
  // among the `total` managed parameters), keeping the exact copy of w: from
  // the anchor when one exists, else into the reused backup buffer. Returns
  // ||e||, measured as applied (w + e minus the exact copy of w).
  ReportValue perturb(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
               const std::vector<size_t>& index, size_t total, const ops::AscentSpec& spec);

  // Puts w back if it is perturbed or holds another set (idempotent).
  void restore();
  bool anchored() const { return anchor_active_; }

  // The sets' own updates just before and after every base step.
  void before_base_step(const std::vector<torch::Tensor>& params);
  void after_base_step(const std::vector<torch::Tensor>& params);

  // The backup buffer no longer matches the parameters (they changed).
  void forget_backup() { backup_.clear(); }

  // Every set's tensors, in set order (for broadcasting rank 0's).
  std::vector<torch::Tensor> tensors() const;

  // Checkpoints: write every set; read and check them without changing
  // anything, then commit what was read.
  void save(torch::serialize::OutputArchive& archive) const;
  using Staged = std::vector<std::vector<torch::Tensor>>;
  Staged read(torch::serialize::InputArchive& archive) const;
  void commit(const Staged& staged);

 private:
  struct Set {
    std::string name;
    std::shared_ptr<const policy::ParameterSet> policy;
    std::vector<torch::Tensor> tensors;
    // θt-1 only: evaluated since the last base step (so it holds w already).
    bool holds_current = false;
  };
  torch::Tensor backup_for(size_t index, const torch::Tensor& param);
  void set_anchor(std::vector<torch::Tensor> params, std::vector<torch::Tensor> copies);

  std::vector<Set> sets_;
  std::vector<torch::Tensor> backup_;  // restore copy when no set holds w
  // The exact copy of w while w is perturbed or holds another set.
  std::vector<torch::Tensor> anchor_params_;
  std::vector<torch::Tensor> anchor_;
  bool anchor_active_ = false;
  // During a θt-1 pass: w holds θt-1 and the set holds θt; restore() swaps back.
  std::vector<torch::Tensor> swapped_params_;
  Set* swapped_set_ = nullptr;
};

}  // namespace tram::detail
