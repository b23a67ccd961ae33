// How src/ops_cuda.cpp cuts parallel tensor lists into the launches of the
// multi-tensor kernels (src/cuda/kernels.h), without allocating: the entries
// are written into a kernels::TensorListLaunch on the stack, which the kernel
// takes by value. A launch therefore needs no metadata memory of its own (no
// pinned staging buffer, no device copy, no host-to-device transfer), and a
// sequence of them can be captured in a CUDA graph.
//
// Host code only, and independent of where the tensors live, so that the
// CPU tests (tests/cuda/test_multi_tensor_launches.cpp) and the host
// emulation of the kernels (tests/cuda/emulation) use this very planner.
#pragma once

#include "cuda/kernels.h"

#include <tram/ops.h>

#include <torch/types.h>

#include <array>
#include <cstddef>
#include <initializer_list>

namespace tram::ops::cuda_impl {

// Calls `launch(key, plan)` once per launch: the tensors with the same
// key(lists[0][i]) (the dtype, or the element size of a bit copy) go
// together, in increasing key order and list order within a key, so that a
// result does not depend on the order of the dtypes in the lists; a key with
// more than kernels::kMaxLaunchTensors tensors takes several launches.
// Tensor i of a launch is lists[l][i] in list l, with spec's eta and coef of
// its index when spec is given. Tensors without elements are left out (the
// kernels' chunk search relies on every entry owning a chunk), and so is a
// launch without any. `launch` returns the cudaError_t of its kernel; the
// first error stops the planning and is returned.
//
// Keys must be small non-negative ints (at most kMaxKeys distinct ones per
// call: the multi-tensor ops see four dtypes or three element sizes).
template <typename Key, typename Launch>
cudaError_t for_each_launch(std::initializer_list<torch::TensorList> lists, const AscentSpec* spec,
                            Key key, Launch&& launch) {
  namespace kernels = tram::cuda;
  constexpr size_t kMaxKeys = 8;
  TORCH_CHECK(lists.size() >= 1 && lists.size() <= static_cast<size_t>(kernels::kMaxTensorLists),
              "tram CUDA ops: 1 to ", kernels::kMaxTensorLists, " tensor lists per launch, not ",
              lists.size());
  const torch::TensorList first = *lists.begin();

  // The distinct keys, ascending (insertion into a small sorted array).
  std::array<int, kMaxKeys> keys{};
  size_t num_keys = 0;
  for (const torch::Tensor& t : first) {
    const int k = key(t);
    size_t at = 0;
    while (at < num_keys && keys[at] < k) ++at;
    if (at < num_keys && keys[at] == k) continue;
    TORCH_CHECK(num_keys < kMaxKeys, "tram CUDA ops: more than ", kMaxKeys,
                " kinds of tensors in one multi-tensor call (internal error)");
    for (size_t j = num_keys; j > at; --j) keys[j] = keys[j - 1];
    keys[at] = k;
    ++num_keys;
  }

  kernels::TensorListLaunch plan;
  for (size_t k = 0; k < num_keys; ++k) {
    plan.num_tensors = 0;
    plan.num_chunks = 0;
    for (size_t i = 0; i < first.size(); ++i) {
      const int64_t numel = first[i].numel();
      if (numel == 0 || key(first[i]) != keys[k]) continue;
      kernels::TensorEntry& entry = plan.entries[plan.num_tensors];
      size_t l = 0;
      for (const torch::TensorList list : lists) entry.data[l++] = list[i].data_ptr();
      for (; l < static_cast<size_t>(kernels::kMaxTensorLists); ++l) entry.data[l] = nullptr;
      entry.numel = numel;
      entry.first_chunk = plan.num_chunks;
      entry.eta = spec != nullptr && !spec->eta.empty() ? spec->eta[i] : 0.0;
      entry.coef = spec != nullptr && !spec->coef.empty() ? spec->coef[i] : 0.0;
      plan.num_chunks += kernels::chunks_of(numel);
      if (++plan.num_tensors == kernels::kMaxLaunchTensors) {
        if (const cudaError_t error = launch(keys[k], plan); error != cudaSuccess) return error;
        plan.num_tensors = 0;
        plan.num_chunks = 0;
      }
    }
    if (plan.num_tensors > 0) {
      if (const cudaError_t error = launch(keys[k], plan); error != cudaSuccess) return error;
    }
  }
  return cudaSuccess;
}

}  // namespace tram::ops::cuda_impl
