// The forward passes of one step(ForwardClosure): how each pass is run (grad
// mode, eval mode for targets, the module's buffers, autocast, noise) and the
// logits kept between the phases. The engine and the policies run passes only
// through this (policy::Passes).
#pragma once

#include <tram/closure.h>
#include <tram/grad_scaler.h>
#include <tram/policy.h>

#include <torch/nn/module.h>
#include <torch/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tram::detail {

// Autocast keeps the low-precision copy of every fp32 leaf parameter it casts
// until the outermost autocast region ends (Python's autocast.__exit__; C++
// code calls at::autocast::clear_cache()). The engine changes w in place
// between the passes of one step (ascent, parameter sets, restore) and the
// base step changes it between steps, so under an autocast region that spans
// step(), a cached copy would make pass 2 see w instead of w + e and every
// pass see the weights of the first cast. The cache is therefore dropped
// before every pass; the casts are redone from the current w.
void drop_autocast_cache();

// Passes after the first must not update running statistics (BatchNorm).
// The buffers are saved before such a pass and put back after the backward
// that follows it: putting them back right after the forward would modify
// tensors the backward of batch norm still needs.
class BufferSnapshot {
 public:
  void take(torch::nn::Module* module);
  void put_back();

 private:
  std::vector<torch::Tensor> buffers_, copies_;
  bool taken_ = false;
};

class StepPasses final : public policy::Passes {
 public:
  // `needs_logits`: the method compares predictive distributions, so every
  // pass must return logits. Passes are counted in `report.passes`.
  StepPasses(const ForwardClosure& forward, std::string method, torch::nn::Module* module,
             const NoiseSampler* sampler, int64_t micro_batches, bool needs_logits, StepReport& report);

  int64_t micro_batches() const override { return micro_batches_; }
  PassOutput run(PassKind kind, std::optional<NoiseOptions> noise, int64_t micro_batch) override;
  // Pass 1 (clean, or noised for TRAM-Fisher): the one pass whose updates of
  // the module's buffers are kept.
  PassOutput run_first(std::optional<NoiseOptions> noise, int64_t micro_batch);
  const torch::Tensor& logits_at(const std::string& name, int64_t micro_batch) const override;
  void keep_logits_at(const std::string& name, std::vector<torch::Tensor> logits);
  std::vector<torch::Tensor>& scratch(const std::string& key) override { return scratch_[key]; }

  // ESAM's data selection: the later passes at w + e on micro-batch
  // `micro_batch` (pass 2, R3F's noised pass) use only `rows`, and the target
  // logits kept for it are cut to the same rows.
  void select_rows(int64_t micro_batch, const torch::Tensor& rows);

  // Accumulates the gradient of one micro-batch's loss: weighted 1/micro_batches,
  // scaled by the loss scaler if any; then puts the module's buffers back.
  void backward(const torch::Tensor& loss, GradScaler* scaler);
  void put_back_statistics() { statistics_.put_back(); }

 private:
  PassOutput run_pass(PassKind kind, std::optional<NoiseOptions> noise, int64_t micro_batch,
                      bool updates_statistics);

  const ForwardClosure& forward_;
  std::string method_;
  torch::nn::Module* module_;
  const NoiseSampler* sampler_;
  int64_t micro_batches_;
  bool needs_logits_;
  StepReport& report_;
  BufferSnapshot statistics_;
  std::map<std::string, std::vector<torch::Tensor>> logits_at_;
  std::map<std::string, std::vector<torch::Tensor>> scratch_;
  std::vector<torch::Tensor> rows_;  // per micro-batch; undefined: every row
};

}  // namespace tram::detail
