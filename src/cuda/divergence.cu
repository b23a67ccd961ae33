// Trust-region divergence kernels (docs/ALGORITHMS.md §5): per prediction row, the forward
// and/or reverse KL between softmax(target) and softmax(current), and the
// gradients of both logit tensors.
//
// Forward, one pass over the two rows: each thread keeps, for each
// distribution, an online log-sum-exp (running maximum m and sum of
// exp(x - m)) together with the running sum of exp(x - m) * (x - y), y being
// the other distribution's logit, rescaled whenever m grows. Since
//   KL(p_x || p_y) = sum_c p_x (x - y) - (lse_x - lse_y),
// that is all a row needs: both KLs come out of one read of the logits (8
// bytes per class for fp32 inputs, 4 for fp16/bf16), with no logits-sized
// temporaries. The threads of a row then merge their states (warp shuffles,
// then shared memory across warps). The forward also saves each row's
// maximum and log-sum of both distributions (16 bytes per row) so that the
// backward needs one pass too: read both logits, write both gradients.
//
// Rows of up to kWarpRowMaxClasses classes get one warp each (eight rows per
// block), longer rows one block of kDivergenceThreads threads each. Rows are
// read with 16-byte loads from the first aligned class on (a row of 50257
// fp32 classes starts at a different alignment every row), two loads per
// tensor in flight per thread; the unaligned head and the tail are read one
// class at a time.
#include "device_utils.cuh"
#include "kernels.h"

#include <algorithm>
#include <cmath>

namespace tram::cuda {
namespace {

constexpr int kDivergenceThreads = 256;
constexpr int64_t kWarpRowMaxClasses = 1024;
constexpr int kRowUnroll = 2;
constexpr int64_t kMaxBlocks = 0x7fffffff;

// The online state of one distribution's logits x against the other's y:
// after every class is added, sum = sum_c exp(x_c - max) and
// weighted / sum = sum_c p_x,c (x_c - y_c). A plain struct (no member
// initializers) so that it can live in shared memory.
struct OnlineKlTerms {
  float max;
  float sum;
  float weighted;

  static __device__ OnlineKlTerms empty() { return {-INFINITY, 0.f, 0.f}; }

  __device__ void add(float x, float x_minus_y) {
    if (x > max) {
      // A new maximum rescales what was summed so far (exp(-inf) = 0 covers
      // the first class). A class whose probability underflows to 0
      // contributes 0 even where x - y is infinite, as in the reference.
      const float scale = expf(max - x);
      sum = sum * scale + 1.f;
      weighted = (scale == 0.f ? 0.f : weighted * scale) + x_minus_y;
      max = x;
    } else if (x > -INFINITY) {
      const float e = expf(x - max);
      sum += e;
      if (e != 0.f) weighted += e * x_minus_y;
    } else if (x != x) {
      sum = x;  // a NaN logit makes the row NaN, as log_softmax does
    }
    // x = -inf: probability 0, contributes nothing.
  }

  __device__ void merge(const OnlineKlTerms& other) {
    const float m = fmaxf(max, other.max);
    if (m == -INFINITY) {
      sum += other.sum;  // both empty; keeps a NaN
      return;
    }
    const float own_scale = max == -INFINITY ? 0.f : expf(max - m);
    const float other_scale = other.max == -INFINITY ? 0.f : expf(other.max - m);
    sum = sum * own_scale + other.sum * other_scale;
    weighted = (own_scale == 0.f ? 0.f : weighted * own_scale) +
               (other_scale == 0.f ? 0.f : other.weighted * other_scale);
    max = m;
  }
};

__device__ __forceinline__ void add_class(OnlineKlTerms& target, OnlineKlTerms& current, float x,
                                          float y) {
  const float x_minus_y = x - y;
  target.add(x, x_minus_y);
  current.add(y, -x_minus_y);
}

__device__ __forceinline__ void warp_merge(OnlineKlTerms& s) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    OnlineKlTerms other;
    other.max = __shfl_xor_sync(0xffffffffu, s.max, offset);
    other.sum = __shfl_xor_sync(0xffffffffu, s.sum, offset);
    other.weighted = __shfl_xor_sync(0xffffffffu, s.weighted, offset);
    s.merge(other);
  }
}

// Merges the states of the kGroup threads of a row; the result is valid in
// the row's first thread. Every thread of the group must call it.
template <int kGroup>
__device__ __forceinline__ void merge_row(OnlineKlTerms& target, OnlineKlTerms& current) {
  warp_merge(target);
  warp_merge(current);
  if constexpr (kGroup > kWarpSize) {
    constexpr int kWarps = kGroup / kWarpSize;
    __shared__ OnlineKlTerms warp_states[2][kWarps];
    const int warp = threadIdx.x / kWarpSize;
    const int lane = threadIdx.x % kWarpSize;
    if (lane == 0) {
      warp_states[0][warp] = target;
      warp_states[1][warp] = current;
    }
    __syncthreads();
    if (warp == 0) {
      target = lane < kWarps ? warp_states[0][lane] : OnlineKlTerms::empty();
      current = lane < kWarps ? warp_states[1][lane] : OnlineKlTerms::empty();
      warp_merge(target);
      warp_merge(current);
    }
    __syncthreads();  // the block's next row reuses warp_states
  }
}

// Classes [0, head) and [vector_end, classes) of a row are accessed one at a
// time, [head, vector_end) with 16-byte vectors. Vectors are used only when
// every given pointer (nullptr: unused) is 16-byte aligned at `head`.
struct RowSplit {
  int64_t head;
  int64_t vector_end;
};

template <typename T>
__device__ __forceinline__ RowSplit split_row(const void* const (&pointers)[4], int64_t classes) {
  constexpr int kVec = Vector<T>::kSize;
  const uintptr_t first = reinterpret_cast<uintptr_t>(pointers[0]);
  const int64_t head = static_cast<int64_t>((kVectorBytes - first % kVectorBytes) % kVectorBytes) /
                       static_cast<int64_t>(sizeof(T));
  bool aligned = first % sizeof(T) == 0 && head < classes;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (pointers[k] != nullptr) {
      aligned = aligned &&
                (reinterpret_cast<uintptr_t>(pointers[k]) + head * sizeof(T)) % kVectorBytes == 0;
    }
  }
  if (!aligned) return {classes, classes};
  return {head, head + (classes - head) / kVec * kVec};
}

// kGroup threads per row: a warp, or the whole block.
template <typename T, int kGroup>
__global__ void __launch_bounds__(kDivergenceThreads)
    divergence_forward_kernel(DivergenceRows in, DivergenceForwardOutputs out) {
  constexpr int kRowsPerBlock = kDivergenceThreads / kGroup;
  constexpr int kVec = Vector<T>::kSize;
  const int lane = threadIdx.x % kGroup;
  const int64_t row_step = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kGroup;
       row < in.rows; row += row_step) {
    // Uniform across the row's threads, so the merge below stays collective.
    if (in.valid_rows != nullptr && !in.valid_rows[row]) {
      if (lane == 0) {
        if (out.forward_kl != nullptr) out.forward_kl[row] = 0.f;
        if (out.reverse_kl != nullptr) out.reverse_kl[row] = 0.f;
        for (int k = 0; k < kRowStatistics; ++k) out.statistics[k * in.rows + row] = 0.f;
      }
      continue;
    }
    const T* __restrict__ target = static_cast<const T*>(in.target) + row * in.target_row_stride;
    const T* __restrict__ current = static_cast<const T*>(in.current) + row * in.current_row_stride;
    OnlineKlTerms target_terms = OnlineKlTerms::empty();
    OnlineKlTerms current_terms = OnlineKlTerms::empty();

    const void* const pointers[4] = {target, current, nullptr, nullptr};
    const RowSplit split = split_row<T>(pointers, in.classes);
    for (int64_t c = lane; c < split.head; c += kGroup) {
      add_class(target_terms, current_terms, widen(target[c]), widen(current[c]));
    }
    for (int64_t first = split.head + static_cast<int64_t>(lane) * kVec; first < split.vector_end;
         first += static_cast<int64_t>(kGroup) * kVec * kRowUnroll) {
      Vector<T> target_vectors[kRowUnroll];
      Vector<T> current_vectors[kRowUnroll];
#pragma unroll
      for (int u = 0; u < kRowUnroll; ++u) {
        const int64_t c = first + static_cast<int64_t>(u) * kGroup * kVec;
        if (c < split.vector_end) {
          target_vectors[u] = load_vector(target + c);
          current_vectors[u] = load_vector(current + c);
        }
      }
#pragma unroll
      for (int u = 0; u < kRowUnroll; ++u) {
        const int64_t c = first + static_cast<int64_t>(u) * kGroup * kVec;
        if (c < split.vector_end) {
#pragma unroll
          for (int k = 0; k < kVec; ++k) {
            add_class(target_terms, current_terms, widen(target_vectors[u].value[k]),
                      widen(current_vectors[u].value[k]));
          }
        }
      }
    }
    for (int64_t c = split.vector_end + lane; c < in.classes; c += kGroup) {
      add_class(target_terms, current_terms, widen(target[c]), widen(current[c]));
    }

    merge_row<kGroup>(target_terms, current_terms);
    if (lane == 0) {
      const float target_log_sum = logf(target_terms.sum);
      const float current_log_sum = logf(current_terms.sum);
      // lse_target - lse_current with the maxima subtracted first: close
      // maxima cancel exactly, which keeps large logits accurate.
      const float lse_gap =
          (target_terms.max - current_terms.max) + (target_log_sum - current_log_sum);
      if (out.forward_kl != nullptr) {
        out.forward_kl[row] = target_terms.weighted / target_terms.sum - lse_gap;
      }
      if (out.reverse_kl != nullptr) {
        out.reverse_kl[row] = current_terms.weighted / current_terms.sum + lse_gap;
      }
      out.statistics[kTargetMax * in.rows + row] = target_terms.max;
      out.statistics[kTargetLogSum * in.rows + row] = target_log_sum;
      out.statistics[kCurrentMax * in.rows + row] = current_terms.max;
      out.statistics[kCurrentLogSum * in.rows + row] = current_log_sum;
    }
  }
}

// The closed forms of src/ops_reference.cpp, for one class, given the row's
// log-softmax statistics: p = softmax(target), q = softmax(current),
//   KL(p || q): d/d target = p ((log p - log q) - KL) (0 where p = 0), d/d current = q - p
//   KL(q || p): d/d current = q ((log q - log p) - KL) (0 where q = 0), d/d target = p - q
struct ClassGradients {
  const float target_max, target_log_sum, current_max, current_log_sum;
  const bool forward, reverse;
  const float forward_kl, reverse_kl, row_grad;

  __device__ __forceinline__ void operator()(float x, float y, float& d_target,
                                             float& d_current) const {
    const float log_p = (x - target_max) - target_log_sum;
    const float log_q = (y - current_max) - current_log_sum;
    const float p = expf(log_p);
    const float q = expf(log_q);
    float wrt_target = 0.f;
    float wrt_current = 0.f;
    if (forward) {
      wrt_target = p == 0.f ? 0.f : p * ((log_p - log_q) - forward_kl);
      wrt_current = q - p;
    }
    if (reverse) {
      wrt_current += q == 0.f ? 0.f : q * ((log_q - log_p) - reverse_kl);
      wrt_target += p - q;
    }
    d_target = wrt_target * row_grad;
    d_current = wrt_current * row_grad;
  }
};

template <typename T, int kGroup>
__global__ void __launch_bounds__(kDivergenceThreads)
    divergence_backward_kernel(DivergenceRows in, DivergenceBackwardArgs args) {
  constexpr int kRowsPerBlock = kDivergenceThreads / kGroup;
  constexpr int kVec = Vector<T>::kSize;
  const int lane = threadIdx.x % kGroup;
  const int64_t row_step = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kGroup;
       row < in.rows; row += row_step) {
    const T* __restrict__ target = static_cast<const T*>(in.target) + row * in.target_row_stride;
    const T* __restrict__ current = static_cast<const T*>(in.current) + row * in.current_row_stride;
    T* __restrict__ target_grad =
        args.target_grad != nullptr ? static_cast<T*>(args.target_grad) + row * in.classes : nullptr;
    T* __restrict__ current_grad = args.current_grad != nullptr
                                       ? static_cast<T*>(args.current_grad) + row * in.classes
                                       : nullptr;
    // A masked row may hold NaN or inf: its gradients are written as zeros
    // without reading it.
    const bool valid = in.valid_rows == nullptr || in.valid_rows[row];
    const ClassGradients gradients{
        valid ? args.statistics[kTargetMax * in.rows + row] : 0.f,
        valid ? args.statistics[kTargetLogSum * in.rows + row] : 0.f,
        valid ? args.statistics[kCurrentMax * in.rows + row] : 0.f,
        valid ? args.statistics[kCurrentLogSum * in.rows + row] : 0.f,
        args.forward_kl != nullptr,
        args.reverse_kl != nullptr,
        valid && args.forward_kl != nullptr ? args.forward_kl[row] : 0.f,
        valid && args.reverse_kl != nullptr ? args.reverse_kl[row] : 0.f,
        valid ? args.row_grads[row] : 0.f};
    auto element = [&](int64_t c, float x, float y) {
      float d_target = 0.f;
      float d_current = 0.f;
      if (valid) gradients(x, y, d_target, d_current);
      if (target_grad != nullptr) target_grad[c] = narrow<T>(d_target);
      if (current_grad != nullptr) current_grad[c] = narrow<T>(d_current);
    };

    const void* const pointers[4] = {target, current, target_grad, current_grad};
    const RowSplit split = split_row<T>(pointers, in.classes);
    for (int64_t c = lane; c < split.head; c += kGroup) {
      element(c, valid ? widen(target[c]) : 0.f, valid ? widen(current[c]) : 0.f);
    }
    for (int64_t first = split.head + static_cast<int64_t>(lane) * kVec; first < split.vector_end;
         first += static_cast<int64_t>(kGroup) * kVec * kRowUnroll) {
      Vector<T> target_vectors[kRowUnroll];
      Vector<T> current_vectors[kRowUnroll];
#pragma unroll
      for (int u = 0; u < kRowUnroll; ++u) {
        const int64_t c = first + static_cast<int64_t>(u) * kGroup * kVec;
        if (valid && c < split.vector_end) {
          target_vectors[u] = load_vector(target + c);
          current_vectors[u] = load_vector(current + c);
        }
      }
#pragma unroll
      for (int u = 0; u < kRowUnroll; ++u) {
        const int64_t c = first + static_cast<int64_t>(u) * kGroup * kVec;
        if (c < split.vector_end) {
          Vector<T> target_out;
          Vector<T> current_out;
#pragma unroll
          for (int k = 0; k < kVec; ++k) {
            float d_target = 0.f;
            float d_current = 0.f;
            if (valid) {
              gradients(widen(target_vectors[u].value[k]), widen(current_vectors[u].value[k]),
                        d_target, d_current);
            }
            target_out.value[k] = narrow<T>(d_target);
            current_out.value[k] = narrow<T>(d_current);
          }
          if (target_grad != nullptr) store_vector(target_grad + c, target_out);
          if (current_grad != nullptr) store_vector(current_grad + c, current_out);
        }
      }
    }
    for (int64_t c = split.vector_end + lane; c < in.classes; c += kGroup) {
      element(c, valid ? widen(target[c]) : 0.f, valid ? widen(current[c]) : 0.f);
    }
  }
}

// One warp per row for short rows, one block per row for long ones.
template <typename T, typename Args>
cudaError_t launch_rows_impl(const DivergenceRows& in, const Args& args, cudaStream_t stream,
                             void (*warp_kernel)(DivergenceRows, Args),
                             void (*block_kernel)(DivergenceRows, Args)) {
  if (in.rows == 0) return cudaSuccess;
  if (in.classes <= kWarpRowMaxClasses) {
    constexpr int64_t kRowsPerBlock = kDivergenceThreads / kWarpSize;
    const int64_t blocks = std::min((in.rows + kRowsPerBlock - 1) / kRowsPerBlock, kMaxBlocks);
    warp_kernel<<<static_cast<unsigned>(blocks), kDivergenceThreads, 0, stream>>>(in, args);
  } else {
    const int64_t blocks = std::min(in.rows, kMaxBlocks);
    block_kernel<<<static_cast<unsigned>(blocks), kDivergenceThreads, 0, stream>>>(in, args);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward_rows(const DivergenceRows& in, const DivergenceForwardOutputs& out,
                         cudaStream_t stream) {
  return launch_rows_impl<T, DivergenceForwardOutputs>(
      in, out, stream, divergence_forward_kernel<T, kWarpSize>,
      divergence_forward_kernel<T, kDivergenceThreads>);
}

template <typename T>
cudaError_t backward_rows(const DivergenceRows& in, const DivergenceBackwardArgs& args,
                          cudaStream_t stream) {
  return launch_rows_impl<T, DivergenceBackwardArgs>(
      in, args, stream, divergence_backward_kernel<T, kWarpSize>,
      divergence_backward_kernel<T, kDivergenceThreads>);
}

}  // namespace

cudaError_t divergence_rows_forward(ElementType type, const DivergenceRows& rows,
                                    const DivergenceForwardOutputs& outputs, cudaStream_t stream) {
  switch (type) {
    case ElementType::kFloat: return forward_rows<float>(rows, outputs, stream);
    case ElementType::kHalf: return forward_rows<__half>(rows, outputs, stream);
    case ElementType::kBFloat16: return forward_rows<__nv_bfloat16>(rows, outputs, stream);
    case ElementType::kDouble: break;  // fp64 logits take the ATen reference
  }
  return cudaErrorInvalidValue;
}

cudaError_t divergence_rows_backward(ElementType type, const DivergenceRows& rows,
                                     const DivergenceBackwardArgs& args, cudaStream_t stream) {
  switch (type) {
    case ElementType::kFloat: return backward_rows<float>(rows, args, stream);
    case ElementType::kHalf: return backward_rows<__half>(rows, args, stream);
    case ElementType::kBFloat16: return backward_rows<__nv_bfloat16>(rows, args, stream);
    case ElementType::kDouble: break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace tram::cuda
