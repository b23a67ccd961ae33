// The parameters one step works on, flattened over the groups in group
// order, with where each came from (for the per-tensor options of the
// multi-tensor ops). Shared by the engine's translation units.
#pragma once

#include <tram/optimizer.h>

#include <vector>

namespace tram {

struct SharpnessAware::Managed {
  std::vector<torch::Tensor> params;
  std::vector<torch::Tensor> grads;
  std::vector<size_t> index;  // position among all managed parameters
  std::vector<size_t> group;
};

}  // namespace tram
