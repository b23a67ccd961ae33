// The collectives the engine runs over a c10d backend (data parallelism,
// docs/ALGORITHMS.md §8). Every one waits for completion; a rank that died or
// timed out makes the others fail here, naming the method and the collective,
// with the process group's own reason attached.
#pragma once

#include <c10/util/intrusive_ptr.h>
#include <torch/types.h>

#include <string>
#include <vector>

namespace c10d {
class Backend;
}

namespace tram::detail {

// Averages the tensors over the ranks, in place: one flat collective per dtype.
void all_reduce_mean(c10d::Backend& group, const std::string& method, const std::vector<torch::Tensor>& tensors);

// Sums `tensor` over the ranks, in place; `what` names it in a failure.
void all_reduce_sum(c10d::Backend& group, const std::string& method, const char* what, torch::Tensor& tensor);

// Every rank gets rank 0's values of the tensors, in place.
void broadcast(c10d::Backend& group, const std::string& method, const std::vector<torch::Tensor>& tensors);

}  // namespace tram::detail
