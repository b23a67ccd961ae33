#include <tram/parameter_groups.h>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/normalization.h>

#include <set>

namespace tram {

namespace {
bool is_normalization(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::LayerNormImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::GroupNormImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::BatchNorm1dImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::BatchNorm2dImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::BatchNorm3dImpl*>(&m) != nullptr;
}
}  // namespace

NormalizationSplit split_normalization_parameters(const torch::nn::Module& module) {
  std::set<const void*> normalization;
  NormalizationSplit split;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (!is_normalization(*m)) continue;
    for (const auto& p : m->parameters(/*recurse=*/false)) {
      if (normalization.insert(p.unsafeGetTensorImpl()).second) split.normalization.push_back(p);
    }
  }
  for (const auto& p : module.parameters(/*recurse=*/true)) {
    if (normalization.count(p.unsafeGetTensorImpl()) == 0) split.others.push_back(p);
  }
  return split;
}

}  // namespace tram
