// Small device helpers shared by tram's kernels: the math type of each
// element type, 16-byte vectors, alignment, and warp/block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tram::cuda {

constexpr int kWarpSize = 32;
constexpr int kVectorBytes = 16;

// Half-precision elements are computed in fp32 and rounded once, when the
// result is stored (as PyTorch's fused optimizers and the ATen reference do).
template <typename T>
struct OpMath {
  using type = T;
};
template <>
struct OpMath<__half> {
  using type = float;
};
template <>
struct OpMath<__nv_bfloat16> {
  using type = float;
};
template <typename T>
using opmath_t = typename OpMath<T>::type;

__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ double widen(double x) { return x; }
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

// Round-to-nearest-even, like c10::Half and c10::BFloat16.
template <typename T>
__device__ __forceinline__ T narrow(opmath_t<T> x);
template <>
__device__ __forceinline__ float narrow<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ double narrow<double>(double x) {
  return x;
}
template <>
__device__ __forceinline__ __half narrow<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Correctly rounded operations the compiler may not contract into fused
// multiply-adds: the multi-tensor ascent then performs exactly the roundings
// of the ATen reference (one per operation), so the two agree bit for bit.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

// kVectorBytes of T, loaded and stored with one 16-byte access.
template <typename T>
struct alignas(kVectorBytes) Vector {
  static constexpr int kSize = kVectorBytes / static_cast<int>(sizeof(T));
  T value[kSize];
};

template <typename T>
__device__ __forceinline__ Vector<T> load_vector(const T* p) {
  return *reinterpret_cast<const Vector<T>*>(p);
}
template <typename T>
__device__ __forceinline__ void store_vector(T* p, const Vector<T>& v) {
  *reinterpret_cast<Vector<T>*>(p) = v;
}

__device__ __forceinline__ bool is_vector_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

// The sum of v over the block, valid in thread 0. Every thread of the block
// must call it, once per kernel (its shared memory is not reused).
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[1024 / kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = (blockDim.x + kWarpSize - 1) / kWarpSize;
    v = lane < warps ? warp_sums[lane] : 0.0;
    v = warp_sum(v);
  }
  return v;
}

}  // namespace tram::cuda
