// The engine's one way of reading tensor values to the host, so that every
// read is counted (tram::host_reads(), include/tram/host_reads.h).
#pragma once

#include <torch/types.h>

#include <vector>

namespace tram::detail {

// `values`, copied to the host in one read (a CPU tensor is returned as it is,
// and counted the same).
torch::Tensor to_host(const torch::Tensor& values);
// A one-element tensor's value, as a double: one read.
double read_scalar(const torch::Tensor& scalar);

// The one-element tensors a step decides with on the host (the loss
// scaler's inf/NaN flag, the trust-region distance, the ascent's squared
// gradient norm), gathered on the device and read in one transfer: one
// synchronisation on a GPU however many values, where reading each would
// stall the stream once per value.
class HostReadBatch {
 public:
  // Queues `scalar`; after the next read() its value is at the index returned.
  size_t add(const torch::Tensor& scalar);
  // Reads every value queued since the last read(): one to_host, none when
  // nothing is queued.
  void read();
  // A value queued and read (as float64).
  double operator[](size_t index) const;

 private:
  std::vector<torch::Tensor> queued_;
  std::vector<double> values_;  // the values read so far, in queue order
};

}  // namespace tram::detail
