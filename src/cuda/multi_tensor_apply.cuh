// The multi-tensor engine: one launch applies an element-wise operation to
// every tensor of up to kMaxTensorLists parallel lists.
//
// Layout: each tensor is cut into chunks of kChunkElements elements; the grid
// has one block per chunk, over all tensors, and a block finds its tensor by
// a binary search over the entries' first chunks (the entries are the
// kernel's by-value argument, in the constant bank: a block's threads all
// read the same entry, which the constant cache broadcasts). One block per chunk lets
// the hardware scheduler balance tensors of very different sizes, from a
// LayerNorm bias to a 38M-element embedding.
//
// Access: when every list's chunk start is 16-byte aligned (always, for
// tensors from the caching allocator), each thread moves 16 bytes per list
// per access, two accesses in flight; otherwise, and for the tail of a chunk,
// one element at a time. Only the lists an operation reads are loaded, and
// only those it writes are stored.
//
// An operation is a small functor:
//   static constexpr int kLists;            lists it uses (<= kMaxTensorLists)
//   static constexpr unsigned kReads;       bit l set: list l is loaded
//   static constexpr unsigned kWrites;      bit l set: list l is stored (the
//                                           operation assigns it for every element)
//   struct Params; Params prepare(const TensorEntry&) const;   per-tensor values
//   struct State;  State begin() const;                        per-thread state
//   void operator()(State&, const Params&, T (&values)[kLists]) const;
//   void end(State&) const;   called once by every thread at the end of its block
//   static constexpr bool kWholeVectors;   true for operations that move bits
//       without looking at elements (copy, swap): the vector path then hands
//       them whole 16-byte vectors, operator()(State&, const Params&,
//       Vector<T> (&)[kLists]), instead of one element at a time (which makes
//       ptxas spill for 2-byte elements)
#pragma once

#include "device_utils.cuh"
#include "kernels.h"

namespace tram::cuda {

constexpr int kEngineThreads = 256;
// Vector accesses in flight per thread and list before the first use.
constexpr int kEngineUnroll = 2;

// The tensor owning `chunk`: the last entry whose first chunk is <= chunk.
// Entries own at least one chunk each, so the answer is unique.
__device__ __forceinline__ int owning_tensor(const TensorEntry* entries, int num_tensors,
                                             int64_t chunk) {
  int lo = 0;
  int hi = num_tensors - 1;
  while (lo < hi) {
    const int mid = lo + (hi - lo + 1) / 2;
    if (entries[mid].first_chunk <= chunk) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

template <typename T, typename Op>
__device__ __forceinline__ void apply_to_element(const Op& op, typename Op::State& state,
                                                 const typename Op::Params& params,
                                                 T* const (&data)[Op::kLists], int64_t i) {
  T values[Op::kLists] = {};
#pragma unroll
  for (int l = 0; l < Op::kLists; ++l) {
    if (Op::kReads & (1u << l)) values[l] = data[l][i];
  }
  op(state, params, values);
#pragma unroll
  for (int l = 0; l < Op::kLists; ++l) {
    if (Op::kWrites & (1u << l)) data[l][i] = values[l];
  }
}

template <typename T, typename Op>
__global__ void __launch_bounds__(kEngineThreads)
    multi_tensor_kernel(const TensorListLaunch launch, Op op) {
  constexpr int kLists = Op::kLists;
  constexpr int kVec = Vector<T>::kSize;
  static_assert(kChunkElements % kVec == 0, "chunks of aligned tensors must start aligned");

  const int64_t chunk = blockIdx.x;
  const TensorEntry& entry = launch.entries[owning_tensor(launch.entries, launch.num_tensors, chunk)];
  const int64_t chunk_begin = (chunk - entry.first_chunk) * kChunkElements;
  const int64_t left = entry.numel - chunk_begin;
  const int64_t count = left < kChunkElements ? left : kChunkElements;

  T* data[kLists];
  bool aligned = true;
#pragma unroll
  for (int l = 0; l < kLists; ++l) {
    data[l] = static_cast<T*>(entry.data[l]) + chunk_begin;
    if ((Op::kReads | Op::kWrites) & (1u << l)) aligned = aligned && is_vector_aligned(data[l]);
  }
  const typename Op::Params params = op.prepare(entry);
  typename Op::State state = op.begin();

  int64_t scalar_begin = 0;
  if (aligned) {
    const int64_t vectors = count / kVec;
    for (int64_t first = threadIdx.x; first < vectors; first += kEngineThreads * kEngineUnroll) {
      Vector<T> packs[kEngineUnroll][kLists];
#pragma unroll
      for (int u = 0; u < kEngineUnroll; ++u) {
        const int64_t v = first + u * kEngineThreads;
        if (v < vectors) {
#pragma unroll
          for (int l = 0; l < kLists; ++l) {
            if (Op::kReads & (1u << l)) packs[u][l] = load_vector(data[l] + v * kVec);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kEngineUnroll; ++u) {
        const int64_t v = first + u * kEngineThreads;
        if (v < vectors) {
          if constexpr (Op::kWholeVectors) {
            op(state, params, packs[u]);
          } else {
#pragma unroll
            for (int k = 0; k < kVec; ++k) {
              T values[kLists] = {};
#pragma unroll
              for (int l = 0; l < kLists; ++l) {
                if (Op::kReads & (1u << l)) values[l] = packs[u][l].value[k];
              }
              op(state, params, values);
#pragma unroll
              for (int l = 0; l < kLists; ++l) {
                if (Op::kWrites & (1u << l)) packs[u][l].value[k] = values[l];
              }
            }
          }
#pragma unroll
          for (int l = 0; l < kLists; ++l) {
            if (Op::kWrites & (1u << l)) store_vector(data[l] + v * kVec, packs[u][l]);
          }
        }
      }
    }
    scalar_begin = vectors * kVec;
  }
  for (int64_t i = scalar_begin + threadIdx.x; i < count; i += kEngineThreads) {
    apply_to_element<T>(op, state, params, data, i);
  }
  op.end(state);
}

// Launches `op` over every chunk of `launch` on `stream`.
template <typename T, typename Op>
cudaError_t multi_tensor_apply(const TensorListLaunch& launch, const Op& op, cudaStream_t stream) {
  if (launch.num_chunks == 0) return cudaSuccess;
  if (launch.num_chunks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  multi_tensor_kernel<T, Op>
      <<<static_cast<unsigned>(launch.num_chunks), kEngineThreads, 0, stream>>>(launch, op);
  return cudaGetLastError();
}

}  // namespace tram::cuda
