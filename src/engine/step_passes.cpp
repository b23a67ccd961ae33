#include "engine/step_passes.h"

#include <tram/eval_mode.h>

#include <ATen/autocast_mode.h>
#include <torch/autograd.h>

namespace tram::detail {

using torch::Tensor;

void drop_autocast_cache() { at::autocast::clear_cache(); }

void BufferSnapshot::take(torch::nn::Module* module) {
  if (module == nullptr || taken_) return;
  torch::NoGradGuard no_grad;
  buffers_ = module->buffers(/*recurse=*/true);
  for (const auto& b : buffers_) copies_.push_back(b.defined() ? b.clone() : Tensor());
  taken_ = true;
}

void BufferSnapshot::put_back() {
  if (!taken_) return;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < buffers_.size(); ++i) {
    if (copies_[i].defined()) buffers_[i].copy_(copies_[i]);
  }
  buffers_.clear();
  copies_.clear();
  taken_ = false;
}

StepPasses::StepPasses(const ForwardClosure& forward, std::string method, torch::nn::Module* module,
                       const NoiseSampler* sampler, int64_t micro_batches, bool needs_logits, StepReport& report)
    : forward_(forward),
      method_(std::move(method)),
      module_(module),
      sampler_(sampler),
      micro_batches_(micro_batches),
      needs_logits_(needs_logits),
      report_(report) {}

PassOutput StepPasses::run(PassKind kind, std::optional<NoiseOptions> noise, int64_t micro_batch) {
  return run_pass(kind, std::move(noise), micro_batch, /*updates_statistics=*/false);
}

PassOutput StepPasses::run_first(std::optional<NoiseOptions> noise, int64_t micro_batch) {
  const PassKind kind = noise ? PassKind::kNoisy : PassKind::kClean;
  return run_pass(kind, std::move(noise), micro_batch, /*updates_statistics=*/true);
}

PassOutput StepPasses::run_pass(PassKind kind, std::optional<NoiseOptions> noise, int64_t micro_batch,
                                bool updates_statistics) {
  const bool at_selected_rows = kind == PassKind::kPerturbed || kind == PassKind::kPerturbedNoisy;
  Tensor rows;
  if (at_selected_rows && static_cast<size_t>(micro_batch) < rows_.size()) rows = rows_[micro_batch];
  Pass pass(kind, std::move(noise), sampler_, micro_batch, micro_batches_, rows);
  ++report_.passes;
  drop_autocast_cache();
  PassOutput out;
  if (kind == PassKind::kTarget) {
    EvalModeGuard eval(module_);
    torch::NoGradGuard no_grad;
    out = forward_(pass);
  } else if (kind == PassKind::kSelection) {
    // Train mode like pass 2, without gradient; no backward follows, so the
    // buffers go back right after the forward.
    statistics_.take(module_);
    {
      torch::NoGradGuard no_grad;
      out = forward_(pass);
    }
    statistics_.put_back();
  } else {
    if (!updates_statistics) statistics_.take(module_);
    torch::AutoGradMode enable_grad(true);
    out = forward_(pass);
    TORCH_CHECK(out.loss.defined() && out.loss.numel() == 1, method_,
                ": the forward closure returned no scalar loss on the ", to_string(kind), " pass");
  }
  TORCH_CHECK(out.logits.defined() || !needs_logits_, method_, ": the forward closure returned no logits on the ",
              to_string(kind), " pass; ", method_, " compares predictive distributions and needs them");
  return out;
}

const Tensor& StepPasses::logits_at(const std::string& name, int64_t micro_batch) const {
  auto it = logits_at_.find(name);
  TORCH_CHECK(it != logits_at_.end(), method_, ": internal error: no target pass ran at parameter set '", name, "'");
  return it->second.at(static_cast<size_t>(micro_batch));
}

void StepPasses::select_rows(int64_t micro_batch, const Tensor& rows) {
  if (rows_.size() < static_cast<size_t>(micro_batches_)) rows_.resize(micro_batches_);
  rows_.at(static_cast<size_t>(micro_batch)) = rows;
  for (auto& [name, logits] : logits_at_) {
    Tensor& kept = logits.at(static_cast<size_t>(micro_batch));
    if (kept.defined()) kept = kept.index_select(0, rows.to(kept.device()));
  }
}

void StepPasses::keep_logits_at(const std::string& name, std::vector<Tensor> logits) {
  logits_at_[name] = std::move(logits);
}

void StepPasses::backward(const Tensor& loss, GradScaler* scaler) {
  torch::AutoGradMode enable_grad(true);
  const int64_t k = micro_batches_;
  Tensor weighted = k > 1 ? loss / static_cast<double>(k) : loss;
  (scaler != nullptr ? scaler->scale(weighted) : weighted).backward();
  statistics_.put_back();
}

}  // namespace tram::detail
