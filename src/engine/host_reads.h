// The engine's one way of reading tensor values to the host, so that every
// read is counted (tram::host_reads(), include/tram/host_reads.h).
#pragma once

#include <torch/types.h>

namespace tram::detail {

// `values`, copied to the host in one read (a CPU tensor is returned as it is,
// and counted the same).
torch::Tensor to_host(const torch::Tensor& values);
// A one-element tensor's value, as a double: one read.
double read_scalar(const torch::Tensor& scalar);

}  // namespace tram::detail
