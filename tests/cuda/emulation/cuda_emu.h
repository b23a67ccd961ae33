// A host emulation of the CUDA features tram's kernels use, so that the
// kernels' indexing, alignment paths, reductions and barriers can be checked
// on a machine without a GPU (check_kernels.cpp). It says nothing about
// speed, and it is no substitute for tests/cuda on a GPU.
//
// Blocks run one after another; the threads of a block are std::threads;
// __syncthreads and warp shuffles are barriers (a kernel whose threads do not
// all reach one deadlocks here, as it would misbehave on a GPU); __shared__
// variables become statics (one block at a time).
#pragma once

#include <cuda_bf16.h>  // host conversions of __half / __nv_bfloat16
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __shared__
#define __shared__ static
#undef __restrict__
#define __restrict__

struct EmuDim {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local EmuDim threadIdx, blockIdx;
inline EmuDim blockDim, gridDim;

namespace emu {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<uint64_t> warp_slots;  // one 8-byte exchange slot per thread
inline int64_t launches = 0;

// kernel<<<grid, block, 0, stream>>>(args) becomes launch(grid, block, [&] { kernel(args); }).
inline void launch(unsigned grid, unsigned block, const std::function<void()>& body) {
  if (grid == 0 || block == 0 || block > 1024 || block % 32 != 0) {
    throw std::runtime_error("emulated launch: invalid configuration");
  }
  ++launches;
  gridDim.x = grid;
  blockDim.x = block;
  for (unsigned b = 0; b < grid; ++b) {
    block_barrier = std::make_unique<std::barrier<>>(block);
    warp_barriers.clear();
    for (unsigned w = 0; w < block / 32; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
    warp_slots.assign(block, 0);
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t) {
      threads.emplace_back([=] {
        threadIdx.x = t;
        blockIdx.x = b;
        body();
      });
    }
    for (auto& thread : threads) thread.join();
  }
}
}  // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles of at most 8 bytes");
  if (mask != 0xffffffffu) throw std::runtime_error("emulated shuffle: only full-warp masks");
  const unsigned lane = threadIdx.x % 32;
  const unsigned warp = threadIdx.x / 32;
  std::memcpy(&emu::warp_slots[threadIdx.x], &value, sizeof(T));
  emu::warp_barriers[warp]->arrive_and_wait();
  T other;
  std::memcpy(&other, &emu::warp_slots[warp * 32 + (lane ^ static_cast<unsigned>(lane_mask))], sizeof(T));
  emu::warp_barriers[warp]->arrive_and_wait();
  return other;
}

// Correctly rounded operations (built with -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __ddiv_rn(double a, double b) { return a / b; }

inline cudaError_t emu_last_error() { return cudaSuccess; }
using std::fabs;
using std::sqrt;
