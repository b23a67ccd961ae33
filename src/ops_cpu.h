// Fused CPU implementations of the multi-tensor ops (include/tram/ops.h).
// Private to the library and its tests.
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

// The scalings whose squared norm the loop takes. The identity ones (SAM's
// g, the released code's) are one ATen reduction per tensor, vectorised for
// the CPU's full width at run time, and measured faster than this loop
// (compiled for the baseline instruction set); the adaptive and Fisher ones
// cost the reference passes with temporaries, and the loop measured 1.3x
// faster (bench/RESULTS.md, CPU kernels). The ascents take every scaling:
// the reference's temporaries cost more than the loop's narrower vectors.
bool takes_norm_scaling(Scaling scaling);
// The dtypes the swap loop takes: fp32/fp64 (measured 1.4x faster than the
// reference); a half-precision element swap does not vectorise here and was
// 3.5x slower.
bool takes_swap(torch::TensorList a);

torch::Tensor squared_norm(torch::TensorList params, torch::TensorList grads, const AscentSpec& spec);
void ascend_with_backup(torch::TensorList params, torch::TensorList grads, torch::TensorList backups,
                        const AscentSpec& spec);
void ascend_from(torch::TensorList params, torch::TensorList sources, torch::TensorList grads,
                 const AscentSpec& spec);
void swap(torch::TensorList a, torch::TensorList b);
torch::Tensor squared_distance(torch::TensorList a, torch::TensorList b);

}  // namespace tram::ops::cpu_impl
