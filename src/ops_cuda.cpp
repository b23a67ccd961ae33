// Dispatch of tram::ops to the CUDA kernels of src/cuda: dtypes, device
// guards, the current stream, allocation, tensor-list metadata and error
// reporting. The kernels themselves see raw pointers only (src/cuda/kernels.h).
#include "ops_cuda.h"

#include "cuda/kernels.h"
#include "multi_tensor_launches.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include <initializer_list>
#include <optional>

namespace tram::ops::cuda_impl {
namespace {

using torch::Tensor;
namespace kernels = tram::cuda;

std::optional<kernels::ElementType> element_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat: return kernels::ElementType::kFloat;
    case torch::kHalf: return kernels::ElementType::kHalf;
    case torch::kBFloat16: return kernels::ElementType::kBFloat16;
    case torch::kDouble: return kernels::ElementType::kDouble;
    default: return std::nullopt;
  }
}

kernels::ElementType kernel_type(torch::ScalarType type) {
  const auto kernel = element_type(type);
  TORCH_CHECK(kernel.has_value(), "tram CUDA ops: no kernel for dtype ", type,
              " (internal error: the dispatch predicate should have sent it to the reference)");
  return *kernel;
}

cudaStream_t current_stream(const torch::Device& device) {
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}

template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// ===========================================================================
// Trust-region divergence
// ===========================================================================

bool half_or_float(const Tensor& t) {
  const auto type = t.scalar_type();
  return type == torch::kFloat || type == torch::kHalf || type == torch::kBFloat16;
}

// Rows as the kernels read them: the common element type, classes
// contiguous (rows may stay strided).
Tensor kernel_rows(const Tensor& rows, torch::ScalarType type) {
  Tensor converted = rows.scalar_type() == type ? rows : rows.to(type);
  if (converted.size(1) > 1 && converted.stride(1) != 1) converted = converted.contiguous();
  return converted;
}

kernels::DivergenceRows describe_rows(const Tensor& target, const Tensor& current,
                                      const Tensor& valid_rows) {
  kernels::DivergenceRows rows;
  rows.target = target.const_data_ptr();
  rows.current = current.const_data_ptr();
  rows.target_row_stride = target.stride(0);
  rows.current_row_stride = current.stride(0);
  rows.rows = target.size(0);
  rows.classes = target.size(1);
  rows.valid_rows = valid_rows.defined() ? valid_rows.const_data_ptr<bool>() : nullptr;
  return rows;
}

// ===========================================================================
// Multi-tensor ops
// ===========================================================================

bool same_element_order(const Tensor& t, const Tensor& reference) {
  return (t.is_contiguous() && reference.is_contiguous()) || t.strides() == reference.strides();
}

// Runs `launch(key, plan, stream)` for each launch for_each_launch plans
// (multi_tensor_launches.h) on the current stream of the lists' device.
template <typename Key, typename Launch>
void launch_grouped(std::initializer_list<torch::TensorList> lists, const AscentSpec* spec, Key key,
                    Launch launch) {
  const torch::Device device = lists.begin()->front().device();
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  C10_CUDA_CHECK(for_each_launch(lists, spec, key,
                                 [&](int group_key, const kernels::TensorListLaunch& plan) {
                                   return launch(group_key, plan, stream);
                                 }));
}

int dtype_key(const Tensor& t) { return static_cast<int>(t.scalar_type()); }
int element_size_key(const Tensor& t) { return static_cast<int>(t.element_size()); }

kernels::AscentScaling kernel_scaling(Scaling scaling) {
  switch (scaling) {
    case Scaling::kIdentity: return kernels::AscentScaling::kIdentity;
    case Scaling::kAdaptive: return kernels::AscentScaling::kAdaptive;
    case Scaling::kFisher: return kernels::AscentScaling::kFisher;
    case Scaling::kReleasedIdentity: return kernels::AscentScaling::kReleasedIdentity;
    case Scaling::kReleasedAdaptive: return kernels::AscentScaling::kReleasedAdaptive;
  }
  TORCH_CHECK(false, "tram CUDA ops: unknown scaling ", static_cast<int>(scaling));
}

// The kernels write through raw pointers; like any in-place op, that must
// invalidate autograd's saved copies of the tensors.
void mark_modified(torch::TensorList tensors) {
  for (const Tensor& t : tensors) torch::autograd::impl::bump_version(t);
}

}  // namespace

// ===========================================================================
// Trust-region divergence
// ===========================================================================

bool divergence_supported(const Tensor& target_rows, const Tensor& current_rows,
                          const Tensor& valid_rows) {
  return target_rows.is_cuda() && current_rows.is_cuda() &&
         target_rows.device() == current_rows.device() && target_rows.dim() == 2 &&
         current_rows.dim() == 2 && half_or_float(target_rows) && half_or_float(current_rows) &&
         (!valid_rows.defined() || valid_rows.device() == target_rows.device());
}

RowKl divergence_rows_forward(const Tensor& target_rows, const Tensor& current_rows,
                              const Tensor& valid_rows, bool forward, bool reverse) {
  const c10::cuda::CUDAGuard guard(target_rows.device());
  const auto type = torch::promote_types(target_rows.scalar_type(), current_rows.scalar_type());
  const Tensor target = kernel_rows(target_rows, type);
  const Tensor current = kernel_rows(current_rows, type);
  const Tensor valid = valid_rows.defined() ? valid_rows.to(torch::kBool).contiguous() : Tensor();
  const int64_t rows = target.size(0);
  const auto fp32 = target.options().dtype(torch::kFloat);

  RowKl out;
  if (forward) out.forward_kl = torch::empty({rows}, fp32);
  if (reverse) out.reverse_kl = torch::empty({rows}, fp32);
  out.statistics = torch::empty({kernels::kRowStatistics, rows}, fp32);
  kernels::DivergenceForwardOutputs outputs;
  outputs.forward_kl = data_or_null<float>(out.forward_kl);
  outputs.reverse_kl = data_or_null<float>(out.reverse_kl);
  outputs.statistics = out.statistics.data_ptr<float>();
  C10_CUDA_CHECK(kernels::divergence_rows_forward(kernel_type(type),
                                                  describe_rows(target, current, valid), outputs,
                                                  current_stream(target.device())));
  return out;
}

std::pair<Tensor, Tensor> divergence_rows_backward(const Tensor& target_rows,
                                                   const Tensor& current_rows,
                                                   const Tensor& valid_rows,
                                                   const RowKl& forward_outputs,
                                                   const Tensor& row_grads, bool need_target_grad,
                                                   bool need_current_grad) {
  TORCH_CHECK(forward_outputs.statistics.defined(),
              "tram CUDA ops: the divergence backward needs the statistics of the CUDA forward");
  const c10::cuda::CUDAGuard guard(target_rows.device());
  const auto type = torch::promote_types(target_rows.scalar_type(), current_rows.scalar_type());
  const Tensor target = kernel_rows(target_rows, type);
  const Tensor current = kernel_rows(current_rows, type);
  const Tensor valid = valid_rows.defined() ? valid_rows.to(torch::kBool).contiguous() : Tensor();
  // The reductions hand in an expanded (stride-0) gradient: materialise it.
  const Tensor grads = row_grads.to(target.device(), torch::kFloat).contiguous();
  TORCH_CHECK(grads.numel() == target.size(0), "tram CUDA ops: ", grads.numel(),
              " row gradients for ", target.size(0), " rows (internal error)");

  Tensor target_grad = need_target_grad ? torch::empty(target.sizes(), target.options()) : Tensor();
  Tensor current_grad =
      need_current_grad ? torch::empty(current.sizes(), current.options()) : Tensor();
  kernels::DivergenceBackwardArgs args;
  args.forward_kl = data_or_null<float>(forward_outputs.forward_kl);
  args.reverse_kl = data_or_null<float>(forward_outputs.reverse_kl);
  args.statistics = forward_outputs.statistics.const_data_ptr<float>();
  args.row_grads = grads.const_data_ptr<float>();
  args.target_grad = target_grad.defined() ? target_grad.data_ptr() : nullptr;
  args.current_grad = current_grad.defined() ? current_grad.data_ptr() : nullptr;
  if (args.target_grad != nullptr || args.current_grad != nullptr) {
    C10_CUDA_CHECK(kernels::divergence_rows_backward(
        kernel_type(type), describe_rows(target, current, valid), args,
        current_stream(target.device())));
  }
  // Back to each input's own dtype (differs only when the inputs' dtypes did).
  if (target_grad.defined()) target_grad = target_grad.to(target_rows.scalar_type());
  if (current_grad.defined()) current_grad = current_grad.to(current_rows.scalar_type());
  return {target_grad, current_grad};
}

// ===========================================================================
// Multi-tensor ops
// ===========================================================================

bool multi_tensor_supported(std::initializer_list<torch::TensorList> lists) {
  const torch::TensorList first = *lists.begin();
  if (first.empty() || !first[0].defined() || !first[0].is_cuda()) return false;
  const torch::Device device = first[0].device();
  for (const torch::TensorList list : lists) {
    if (list.size() != first.size()) return false;
    for (size_t i = 0; i < list.size(); ++i) {
      const Tensor& t = list[i];
      if (!t.defined() || t.device() != device || !element_type(t.scalar_type()).has_value() ||
          !t.is_non_overlapping_and_dense() || !same_element_order(t, first[i])) {
        return false;
      }
    }
  }
  return true;
}

Tensor squared_norm(torch::TensorList params, torch::TensorList grads, const AscentSpec& spec) {
  const torch::Device device = params[0].device();
  const c10::cuda::CUDAGuard guard(device);
  int64_t total_chunks = 0;
  bool any_double = false;
  for (const Tensor& p : params) {
    total_chunks += kernels::chunks_of(p.numel());
    any_double = any_double || p.scalar_type() == torch::kDouble;
  }
  // One partial sum per chunk over all launches, then one reduction: a fixed
  // summation order, so the norm is deterministic.
  const Tensor partials =
      torch::empty({std::max<int64_t>(total_chunks, 1)}, torch::TensorOptions().device(device).dtype(torch::kDouble));
  int64_t offset = 0;
  const auto scaling = kernel_scaling(spec.scaling);
  launch_grouped({params, grads}, &spec, dtype_key,
                 [&](int key, const kernels::TensorListLaunch& launch, cudaStream_t stream) {
                   double* group_partials = partials.data_ptr<double>() + offset;
                   offset += launch.num_chunks;
                   return kernels::squared_norm_partials(
                       kernel_type(static_cast<torch::ScalarType>(key)), scaling, launch,
                       group_partials, stream);
                 });
  const auto result_type = any_double ? torch::kDouble : torch::kFloat;
  Tensor result = torch::empty({}, torch::TensorOptions().device(device).dtype(result_type));
  C10_CUDA_CHECK(kernels::sum_partials(partials.const_data_ptr<double>(), offset,
                                       kernel_type(result_type), result.data_ptr(),
                                       current_stream(device)));
  return result;
}

void ascend_with_backup(torch::TensorList params, torch::TensorList grads,
                        torch::TensorList backups, const AscentSpec& spec) {
  const auto scaling = kernel_scaling(spec.scaling);
  launch_grouped({params, grads, backups}, &spec, dtype_key,
                 [&](int key, const kernels::TensorListLaunch& launch, cudaStream_t stream) {
                   return kernels::ascend_with_backup(
                       kernel_type(static_cast<torch::ScalarType>(key)), scaling, launch, stream);
                 });
  mark_modified(params);
  mark_modified(backups);
}

void ascend_from(torch::TensorList params, torch::TensorList sources, torch::TensorList grads,
                 const AscentSpec& spec) {
  const auto scaling = kernel_scaling(spec.scaling);
  launch_grouped({params, sources, grads}, &spec, dtype_key,
                 [&](int key, const kernels::TensorListLaunch& launch, cudaStream_t stream) {
                   return kernels::ascend_from(kernel_type(static_cast<torch::ScalarType>(key)),
                                               scaling, launch, stream);
                 });
  mark_modified(params);
}

void copy(torch::TensorList dst, torch::TensorList src) {
  launch_grouped({dst, src}, nullptr, element_size_key,
                 [](int element_size, const kernels::TensorListLaunch& launch,
                    cudaStream_t stream) { return kernels::copy(element_size, launch, stream); });
  mark_modified(dst);
}

void swap(torch::TensorList a, torch::TensorList b) {
  launch_grouped({a, b}, nullptr, element_size_key,
                 [](int element_size, const kernels::TensorListLaunch& launch,
                    cudaStream_t stream) { return kernels::swap(element_size, launch, stream); });
  mark_modified(a);
  mark_modified(b);
}

}  // namespace tram::ops::cuda_impl
