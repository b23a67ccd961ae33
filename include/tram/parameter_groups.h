// SAM-ON (Mueller et al. 2023): perturb only the normalization layers. This
// splits a module's parameters into two groups for the base optimizer, so that
// group 0 (the normalization layers) or group 1 (the rest) can be left out of
// the ascent with GroupOptions::perturb(false):
//
//   auto split = tram::split_normalization_parameters(*model);
//   auto base = std::make_shared<torch::optim::AdamW>(split.groups(), torch::optim::AdamWOptions(1e-4));
//   tram::SAM optimizer(base);
//   optimizer.group_options(1).perturb(false);   // SAM-ON: only the normalization layers move
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <vector>

namespace tram {

struct NormalizationSplit {
  // Parameters of LayerNorm, BatchNorm1d/2d/3d and GroupNorm modules (by type).
  std::vector<torch::Tensor> normalization;
  // Every other parameter, in the module's order.
  std::vector<torch::Tensor> others;
  // {normalization, others}, as groups for a base optimizer.
  std::vector<torch::optim::OptimizerParamGroup> groups() const { return {normalization, others}; }
};

NormalizationSplit split_normalization_parameters(const torch::nn::Module& module);

}  // namespace tram
