// Fused CPU implementations of tram::ops (include/tram/ops.h): the
// multi-tensor ops and the divergence's forward. Private to the library.
//
// The ATen reference builds each op from _foreach_ calls, each a pass over
// memory with parameter-sized temporaries (the ascent with backup reads and
// writes about 9 parameter sizes and allocates one); these loops make one
// pass, moving each input once and each output once, with no allocation:
// the floor the CUDA kernels reach on a GPU. The elementwise results are bit
// for bit the reference's (the same operations in the same order, one
// rounding each, in fp32 for fp16/bf16 and rounded once when written); the
// reductions accumulate in fp64, in fixed blocks summed in block order, so a
// result does not depend on the thread count.
//
// src/ops_reference.cpp validates the arguments and asks supported() after
// the CUDA predicate; the functions here assume validated arguments for which
// supported() said yes.
#pragma once

#include <tram/ops.h>

#include <torch/types.h>

#include <initializer_list>

namespace tram::ops::cpu_impl {

// Every tensor of every list on the CPU, fp32/fp64/fp16/bf16, contiguous, and
// of the dtype of the tensor at its index in the first list; the first list
// non-empty. Anything else takes the reference for the whole call.
bool supported(std::initializer_list<torch::TensorList> lists);

torch::Tensor squared_norm(torch::TensorList params, torch::TensorList grads, const AscentSpec& spec);
void ascend_with_backup(torch::TensorList params, torch::TensorList grads, torch::TensorList backups,
                        const AscentSpec& spec);
void ascend_from(torch::TensorList params, torch::TensorList sources, torch::TensorList grads,
                 const AscentSpec& spec);
void swap(torch::TensorList a, torch::TensorList b);
torch::Tensor squared_distance(torch::TensorList a, torch::TensorList b);

// The divergence's per-row KLs (docs/ALGORITHMS.md §5) in one read of each
// logits row: its maximum, then exp(x - max) into a row-sized scratch and
// their sum, then the KL terms from the scratch (the row is in cache by
// then). Sums in fp64; exp and the terms in the accumulation type.
//
// Both logit tensors [rows, classes] on the CPU, contiguous, of one dtype
// (fp32/fp64/fp16/bf16); the valid rows, if any, a contiguous [rows] bool
// tensor on the CPU. Mixed dtypes take the reference.
bool divergence_supported(const torch::Tensor& target_rows, const torch::Tensor& current_rows,
                          const torch::Tensor& valid_rows);

struct RowKl {
  torch::Tensor forward_kl;  // [rows] KL(p_target || p_current), when asked for
  torch::Tensor reverse_kl;  // [rows] KL(p_current || p_target), when asked for
};

// fp32 results (fp64 for fp64 logits); rows that are not valid are 0.
RowKl divergence_rows_forward(const torch::Tensor& target_rows, const torch::Tensor& current_rows,
                              const torch::Tensor& valid_rows, bool forward, bool reverse);

// The gradients of the logits (in their dtype; undefined where not needed)
// given dLoss/dD per row, from the forward's rows (the divergences that are
// defined in `rows` are the ones differentiated): the closed forms of the
// reference's backward, dKL(p||q)/dz_p = p ((log p - log q) - KL) (0 where
// p = 0) and dKL(p||q)/dz_q = q - p, with the row statistics recomputed in
// one read of each row. Rows that are not valid get 0.
std::pair<torch::Tensor, torch::Tensor> divergence_rows_backward(const torch::Tensor& target_rows,
                                                                 const torch::Tensor& current_rows,
                                                                 const torch::Tensor& valid_rows, const RowKl& rows,
                                                                 const torch::Tensor& row_grads, bool need_target_grad,
                                                                 bool need_current_grad);

}  // namespace tram::ops::cpu_impl
