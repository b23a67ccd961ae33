// The boundary between tram's CUDA kernels and their dispatch.
//
// The kernels (src/cuda/*.cu) see raw pointers, element counts and a
// cudaStream_t only: no torch headers, so nvcc compiles them quickly and they
// do not depend on LibTorch's ABI. The dispatch (src/ops_cuda.cpp) owns
// everything torch: dtypes, devices, device guards, streams, allocation and
// error reporting. Everything here is plain data, laid out the same by the
// host compiler and nvcc.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tram::cuda {

// The element types the kernels are instantiated for.
enum class ElementType : int { kFloat, kHalf, kBFloat16, kDouble };

// ===========================================================================
// Trust-region divergence, per prediction row (docs/ALGORITHMS.md §5)
// ===========================================================================

// Two logit tensors of `rows` x `classes` elements of one element type
// (kFloat, kHalf or kBFloat16; the math is fp32). Element (r, c) of the target
// is target[r * target_row_stride + c]: classes are contiguous, rows may be
// strided.
struct DivergenceRows {
  const void* target = nullptr;
  const void* current = nullptr;
  int64_t target_row_stride = 0;
  int64_t current_row_stride = 0;
  int64_t rows = 0;
  int64_t classes = 0;
  const bool* valid_rows = nullptr;  // [rows]; nullptr: every row is valid
};

// The statistics the forward saves for the backward, per row: the maximum
// logit and the log of the sum of exp(logit - maximum), of each
// distribution. Saving the maximum and the log-sum separately (not their sum)
// keeps log p = (x - max) - log_sum as accurate as ATen's log_softmax when
// the logits are large (1e4: one ulp of the sum would be 1e-3).
enum RowStatistic : int {
  kTargetMax = 0,
  kTargetLogSum = 1,
  kCurrentMax = 2,
  kCurrentLogSum = 3,
  kRowStatistics = 4,
};

struct DivergenceForwardOutputs {
  float* forward_kl = nullptr;  // [rows] KL(p_target || p_current), or nullptr if not wanted
  float* reverse_kl = nullptr;  // [rows] KL(p_current || p_target), or nullptr if not wanted
  float* statistics = nullptr;  // [kRowStatistics, rows], always written
};

// Masked rows get 0 in every output and are not read.
cudaError_t divergence_rows_forward(ElementType type, const DivergenceRows& rows,
                                    const DivergenceForwardOutputs& outputs, cudaStream_t stream);

struct DivergenceBackwardArgs {
  const float* forward_kl = nullptr;  // [rows] as the forward wrote it; nullptr: no forward KL term
  const float* reverse_kl = nullptr;  // [rows]; nullptr: no reverse KL term
  const float* statistics = nullptr;  // [kRowStatistics, rows] from the forward
  const float* row_grads = nullptr;   // [rows] dLoss/dD of each row
  void* target_grad = nullptr;   // [rows, classes] contiguous, the logits' type; nullptr: not needed
  void* current_grad = nullptr;  // likewise
};

// Gradients of both logit tensors (closed forms in src/ops_reference.cpp);
// masked rows get zero gradients.
cudaError_t divergence_rows_backward(ElementType type, const DivergenceRows& rows,
                                     const DivergenceBackwardArgs& args, cudaStream_t stream);

// ===========================================================================
// Multi-tensor operations (docs/ALGORITHMS.md §2)
// ===========================================================================

// One launch covers any number of tensors: each tensor is cut into chunks of
// kChunkElements elements and every chunk is one thread block. A multiple of
// every vector width (16 bytes / element size), so that chunks of an aligned
// tensor start aligned.
constexpr int64_t kChunkElements = 8192;
constexpr int kMaxTensorLists = 3;

inline int64_t chunks_of(int64_t numel) { return (numel + kChunkElements - 1) / kChunkElements; }

// One tensor of a launch: its element i in list l is at data[l][i] (dense,
// same strides in every list). Tensors without elements are left out of a
// launch, so every entry owns at least one chunk.
struct TensorEntry {
  void* data[kMaxTensorLists] = {nullptr, nullptr, nullptr};
  int64_t numel = 0;
  int64_t first_chunk = 0;  // chunks [first_chunk, first_chunk + chunks_of(numel)) are this tensor's
  double eta = 0.0;         // adaptive offset or Fisher damping of the tensor's group
  double coef = 0.0;        // radius / norm of the tensor's group
};

// Tensors per launch. A launch's entries travel by value, as the kernel's
// argument (PyTorch's multi_tensor_apply does the same): the launch then
// needs no memory for its metadata and no host-to-device copy, so it
// allocates nothing and can be captured in a CUDA graph. 64 entries keep the
// argument under the 4 KiB kernel-parameter limit of every CUDA version and
// architecture; longer lists take one launch per 64 tensors (GPT-2 small's
// 148 parameters: 3).
constexpr int kMaxLaunchTensors = 64;

// entries[0, num_tensors), sorted by first_chunk; the first starts at chunk 0.
struct TensorListLaunch {
  TensorEntry entries[kMaxLaunchTensors];
  int num_tensors = 0;
  int64_t num_chunks = 0;
};
static_assert(sizeof(TensorListLaunch) <= 4096, "a launch must fit the 4 KiB kernel-parameter limit");

// Mirrors tram::ops::Scaling.
enum class AscentScaling : int {
  kIdentity,          // norm g^2,            direction g
  kAdaptive,          // norm ((|w|+eta) g)^2, direction (|w|+eta)^2 g
  kFisher,            // norm g^2 / f,        direction g / f, f = 1 + eta g^2
  kReleasedIdentity,  // norm g^2,            direction 1
  kReleasedAdaptive,  // norm ((|w|+eta) g)^2, direction (|w|+eta)^2
};

// Lists: 0 params, 1 grads. partials[chunk] = the chunk's sum of squares
// (accumulated in fp32, fp64 for kDouble).
cudaError_t squared_norm_partials(ElementType type, AscentScaling scaling,
                                  const TensorListLaunch& launch, double* partials,
                                  cudaStream_t stream);

// *result = sum of partials[0, count), in fp64, stored as float or double
// (`result_type` kFloat or kDouble). One block; count may be 0.
cudaError_t sum_partials(const double* partials, int64_t count, ElementType result_type,
                         void* result, cudaStream_t stream);

// Lists: 0 params, 1 grads, 2 backups. backup = w; w = w + coef * direction.
cudaError_t ascend_with_backup(ElementType type, AscentScaling scaling,
                               const TensorListLaunch& launch, cudaStream_t stream);

// Lists: 0 params, 1 sources, 2 grads. w = source + coef * direction(source, g).
cudaError_t ascend_from(ElementType type, AscentScaling scaling, const TensorListLaunch& launch,
                        cudaStream_t stream);

// Bit copies, any element type of `element_size` bytes (2, 4 or 8).
// copy: lists 0 dst, 1 src. swap: lists 0 a, 1 b.
cudaError_t copy(int element_size, const TensorListLaunch& launch, cudaStream_t stream);
cudaError_t swap(int element_size, const TensorListLaunch& launch, cudaStream_t stream);

}  // namespace tram::cuda
