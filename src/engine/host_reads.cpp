// Counted reads to the host, and the report values that defer them.
#include <tram/closure.h>
#include <tram/host_reads.h>

#include "engine/host_reads.h"

#include <atomic>
#include <mutex>

namespace tram {
namespace {
std::atomic<uint64_t> reads{0};
}  // namespace

uint64_t host_reads() { return reads.load(std::memory_order_relaxed); }

namespace detail {

torch::Tensor to_host(const torch::Tensor& values) {
  reads.fetch_add(1, std::memory_order_relaxed);
  return values.cpu();
}

double read_scalar(const torch::Tensor& scalar) {
  TORCH_CHECK(scalar.numel() == 1, "tram: internal error: a host read of one value got ", scalar.numel());
  return to_host(scalar).to(torch::kFloat64).item<double>();
}

size_t HostReadBatch::add(const torch::Tensor& scalar) {
  TORCH_CHECK(scalar.numel() == 1, "tram: internal error: a batched host read of one value got ", scalar.numel());
  queued_.push_back(scalar.detach().reshape({}));
  return queued_.size() - 1;
}

void HostReadBatch::read() {
  if (values_.size() == queued_.size()) return;
  // On the device of the first value queued (a copy between devices, not a read).
  const torch::Device device = queued_[values_.size()].device();
  std::vector<torch::Tensor> pending;
  for (size_t i = values_.size(); i < queued_.size(); ++i) pending.push_back(queued_[i].to(device, torch::kFloat64));
  const torch::Tensor values = to_host(torch::stack(pending)).contiguous();
  const double* data = values.data_ptr<double>();
  values_.insert(values_.end(), data, data + values.numel());
}

double HostReadBatch::operator[](size_t index) const {
  TORCH_CHECK(index < values_.size(), "tram: internal error: host value ", index, " was not read");
  return values_[index];
}

}  // namespace detail

struct ReportValue::Pending {
  std::once_flag once;
  torch::Tensor scalar;
  double value = 0.0;
};

ReportValue ReportValue::on_device(torch::Tensor scalar) {
  TORCH_CHECK(scalar.numel() == 1, "tram::ReportValue: needs a one-element tensor, got shape ", scalar.sizes());
  ReportValue out;
  out.pending_ = std::make_shared<Pending>();
  out.pending_->scalar = scalar.detach();
  return out;
}

ReportValue ReportValue::minus(const ReportValue& a, const ReportValue& b) {
  if (a.pending() && b.pending()) return on_device(a.pending_->scalar - b.pending_->scalar);
  return a.value() - b.value();
}

double ReportValue::value() const {
  if (!pending_) return value_;
  std::call_once(pending_->once, [this] {
    pending_->value = detail::read_scalar(pending_->scalar);
    pending_->scalar = torch::Tensor();  // the device memory goes back
  });
  return pending_->value;
}

bool ReportValue::pending() const { return pending_ && pending_->scalar.defined(); }

}  // namespace tram
