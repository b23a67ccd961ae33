// CUDA implementations of tram::ops (include/tram/ops.h), compiled when tram
// is built with TRAM_WITH_CUDA. Private to the library and its tests.
//
// src/ops_reference.cpp validates the arguments of every op and then asks
// the `*_supported` predicate here, in one place per op: when it says yes,
// the op runs here, otherwise the ATen reference runs. The functions below
// assume validated arguments for which their predicate said yes.
#pragma once

#include <tram/ops.h>

#include <torch/types.h>

#include <initializer_list>
#include <utility>

namespace tram::ops::cuda_impl {

// ---------------------------------------------------------------------------
// Trust-region divergence on logits of shape [rows, classes]
// ---------------------------------------------------------------------------

// Both logit tensors on one CUDA device, fp32/fp16/bf16 (fp64 logits take the
// reference), 2-D. The two dtypes may differ: the narrower input is widened
// to the common type first (exact; costs one logits-sized copy). Rows are
// read in place at any row stride; a tensor whose classes are not contiguous
// is made contiguous first.
bool divergence_supported(const torch::Tensor& target_rows, const torch::Tensor& current_rows,
                          const torch::Tensor& valid_rows);

struct RowKl {
  torch::Tensor forward_kl;  // [rows] fp32 KL(p_target || p_current), when asked for
  torch::Tensor reverse_kl;  // [rows] fp32 KL(p_current || p_target), when asked for
  torch::Tensor statistics;  // [4, rows] fp32 per-row log-softmax statistics for the backward
};

// Masked rows (valid_rows false; undefined = all valid) are 0.
RowKl divergence_rows_forward(const torch::Tensor& target_rows, const torch::Tensor& current_rows,
                              const torch::Tensor& valid_rows, bool forward, bool reverse);

// The gradients of the logits (in their dtypes) given dLoss/dD per row, from
// the forward's outputs; undefined where not needed.
std::pair<torch::Tensor, torch::Tensor> divergence_rows_backward(
    const torch::Tensor& target_rows, const torch::Tensor& current_rows,
    const torch::Tensor& valid_rows, const RowKl& forward_outputs, const torch::Tensor& row_grads,
    bool need_target_grad, bool need_current_grad);

// ---------------------------------------------------------------------------
// Multi-tensor ascent
// ---------------------------------------------------------------------------

// Every tensor of every list on one CUDA device, fp32/fp16/bf16/fp64, dense
// (contiguous, or any dense layout such as channels-last) with the same
// element order as the tensor at its index in the first list, and the first
// list non-empty. Anything else (e.g. a transposed or strided view) takes the
// reference for the whole call.
bool multi_tensor_supported(std::initializer_list<torch::TensorList> lists);

torch::Tensor squared_norm(torch::TensorList params, torch::TensorList grads,
                           const AscentSpec& spec);
void ascend_with_backup(torch::TensorList params, torch::TensorList grads,
                        torch::TensorList backups, const AscentSpec& spec);
void ascend_from(torch::TensorList params, torch::TensorList sources, torch::TensorList grads,
                 const AscentSpec& spec);
void copy(torch::TensorList dst, torch::TensorList src);
void swap(torch::TensorList a, torch::TensorList b);

}  // namespace tram::ops::cuda_impl
