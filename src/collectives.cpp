#include "collectives.h"

#include <torch/autograd.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <map>

namespace tram::detail {

using torch::Tensor;

namespace {
template <class Start>
void wait_for(const std::string& method, const char* what, Start&& start) {
  try {
    start()->wait();
  } catch (const std::exception& e) {
    TORCH_CHECK(false, method, ": the ", what, " over the process group failed (a rank may have died or timed out): ",
                e.what());
  }
}
}  // namespace

void all_reduce_mean(c10d::Backend& group, const std::string& method, const std::vector<Tensor>& tensors) {
  if (tensors.empty()) return;
  torch::NoGradGuard no_grad;
  std::map<c10::ScalarType, std::vector<Tensor>> by_dtype;
  for (const auto& t : tensors) by_dtype[t.scalar_type()].push_back(t);
  const double world = group.getSize();
  for (auto& [dtype, same] : by_dtype) {
    std::vector<Tensor> pieces;
    for (const auto& t : same) pieces.push_back(t.reshape({-1}));
    std::vector<Tensor> flat{torch::cat(pieces)};
    wait_for(method, "gradient all-reduce", [&] { return group.allreduce(flat); });
    flat[0].div_(world);
    int64_t offset = 0;
    for (auto& t : same) {
      t.copy_(flat[0].narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

void all_reduce_sum(c10d::Backend& group, const std::string& method, const char* what, Tensor& tensor) {
  std::vector<Tensor> one{tensor};
  wait_for(method, what, [&] { return group.allreduce(one); });
  tensor = one[0];
}

void broadcast(c10d::Backend& group, const std::string& method, const std::vector<Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors) {
    std::vector<Tensor> one{t};
    wait_for(method, "parameter broadcast", [&] { return group.broadcast(one); });
  }
}

}  // namespace tram::detail
