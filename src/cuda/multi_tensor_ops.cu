// The multi-tensor ascent operations (docs/ALGORITHMS.md §2) as thin functors over the
// engine in multi_tensor_apply.cuh.
//
// Memory traffic per element (the floor is each input read once, each output
// written once; the kernels move exactly that):
//   squared_norm        read g (and w for the adaptive scalings)
//   ascend_with_backup  read w, g; write w, backup
//   ascend_from         read source, g; write w
//   copy                read src; write dst
//   swap                read a, b; write a, b
#include "device_utils.cuh"
#include "kernels.h"
#include "multi_tensor_apply.cuh"

namespace tram::cuda {
namespace {

struct NoState {};

// What the squared norm sums (docs/ALGORITHMS.md §2): g^2, (T g)^2 with T = |w| + eta, or
// g^2 / f with f = 1 + eta g^2. The released scalings share the norms of
// their paper counterparts.
enum class NormTerm { kGradient, kAdaptive, kFisher };

NormTerm norm_term_of(AscentScaling scaling) {
  switch (scaling) {
    case AscentScaling::kAdaptive:
    case AscentScaling::kReleasedAdaptive: return NormTerm::kAdaptive;
    case AscentScaling::kFisher: return NormTerm::kFisher;
    case AscentScaling::kIdentity:
    case AscentScaling::kReleasedIdentity: break;
  }
  return NormTerm::kGradient;
}

// Lists: 0 params, 1 grads. Each thread sums its elements in opmath; the
// block's sum becomes the chunk's partial.
template <typename T, NormTerm kTerm>
struct SquaredNormOp {
  using acc_t = opmath_t<T>;
  static constexpr int kLists = 2;
  static constexpr unsigned kReads = kTerm == NormTerm::kAdaptive ? 0b11u : 0b10u;
  static constexpr unsigned kWrites = 0;
  static constexpr bool kWholeVectors = false;
  struct Params {
    acc_t eta;
  };
  using State = acc_t;

  double* partials;

  __device__ Params prepare(const TensorEntry& entry) const {
    return {static_cast<acc_t>(entry.eta)};
  }
  __device__ State begin() const { return acc_t(0); }
  __device__ void operator()(State& sum, const Params& p, T (&v)[kLists]) const {
    const acc_t g = widen(v[1]);
    acc_t term;
    if constexpr (kTerm == NormTerm::kGradient) {
      term = g;
    } else if constexpr (kTerm == NormTerm::kAdaptive) {
      term = (fabs(widen(v[0])) + p.eta) * g;
    } else {
      // g / sqrt(f) squared, as the reference computes it: g^2 / f would turn
      // an overflowing g^2 into inf / inf = NaN instead of 1/eta.
      term = g / sqrt(g * g * p.eta + acc_t(1));
    }
    sum += term * term;
  }
  __device__ void end(State& sum) const {
    const double chunk_sum = block_sum(static_cast<double>(sum));
    if (threadIdx.x == 0) partials[blockIdx.x] = chunk_sum;
  }
};

// w + coef * direction(w, g), with the reference's operations in its order
// (one rounding each, no fused multiply-add): see device_utils.cuh.
template <typename acc_t>
__device__ __forceinline__ acc_t ascended(AscentScaling scaling, acc_t w, acc_t g, acc_t eta,
                                          acc_t coef) {
  acc_t e;
  switch (scaling) {
    case AscentScaling::kIdentity:  // g
      e = mul_rn(g, coef);
      break;
    case AscentScaling::kAdaptive: {  // T^2 g
      const acc_t t = add_rn(fabs(w), eta);
      e = mul_rn(mul_rn(mul_rn(t, t), g), coef);
      break;
    }
    case AscentScaling::kReleasedAdaptive: {  // T^2: the released code never multiplies by g
      const acc_t t = add_rn(fabs(w), eta);
      e = mul_rn(mul_rn(t, t), coef);
      break;
    }
    case AscentScaling::kFisher: {  // g / f
      const acc_t f = add_rn(mul_rn(mul_rn(g, g), eta), acc_t(1));
      e = mul_rn(div_rn(g, f), coef);
      break;
    }
    case AscentScaling::kReleasedIdentity:  // 1: every element moves by coef
    default:
      e = coef;
      break;
  }
  return add_rn(e, w);
}

// Lists: 0 params, 1 grads, 2 backups. backup = w (bit copy); w += e.
template <typename T>
struct AscendWithBackupOp {
  using acc_t = opmath_t<T>;
  static constexpr int kLists = 3;
  static constexpr unsigned kReads = 0b011u;
  static constexpr unsigned kWrites = 0b101u;
  static constexpr bool kWholeVectors = false;
  struct Params {
    acc_t eta, coef;
  };
  using State = NoState;

  AscentScaling scaling;

  __device__ Params prepare(const TensorEntry& entry) const {
    return {static_cast<acc_t>(entry.eta), static_cast<acc_t>(entry.coef)};
  }
  __device__ State begin() const { return {}; }
  __device__ void operator()(State&, const Params& p, T (&v)[kLists]) const {
    v[2] = v[0];
    v[0] = narrow<T>(ascended(scaling, widen(v[0]), widen(v[1]), p.eta, p.coef));
  }
  __device__ void end(State&) const {}
};

// Lists: 0 params, 1 sources, 2 grads. w = source + e(source, g).
template <typename T>
struct AscendFromOp {
  using acc_t = opmath_t<T>;
  static constexpr int kLists = 3;
  static constexpr unsigned kReads = 0b110u;
  static constexpr unsigned kWrites = 0b001u;
  static constexpr bool kWholeVectors = false;
  using Params = typename AscendWithBackupOp<T>::Params;
  using State = NoState;

  AscentScaling scaling;

  __device__ Params prepare(const TensorEntry& entry) const {
    return {static_cast<acc_t>(entry.eta), static_cast<acc_t>(entry.coef)};
  }
  __device__ State begin() const { return {}; }
  __device__ void operator()(State&, const Params& p, T (&v)[kLists]) const {
    v[0] = narrow<T>(ascended(scaling, widen(v[1]), widen(v[2]), p.eta, p.coef));
  }
  __device__ void end(State&) const {}
};

// Bit copies: T is an unsigned integer of the element's size, so any dtype
// of that size (and NaN payloads, signed zeros) is copied exactly.
template <typename T>
struct CopyOp {
  static constexpr int kLists = 2;
  static constexpr unsigned kReads = 0b10u;
  static constexpr unsigned kWrites = 0b01u;
  static constexpr bool kWholeVectors = true;
  struct Params {};
  using State = NoState;
  __device__ Params prepare(const TensorEntry&) const { return {}; }
  __device__ State begin() const { return {}; }
  template <typename Value>  // an element, or a whole vector of elements
  __device__ void operator()(State&, const Params&, Value (&v)[kLists]) const {
    v[0] = v[1];
  }
  __device__ void end(State&) const {}
};

template <typename T>
struct SwapOp {
  static constexpr int kLists = 2;
  static constexpr unsigned kReads = 0b11u;
  static constexpr unsigned kWrites = 0b11u;
  static constexpr bool kWholeVectors = true;
  struct Params {};
  using State = NoState;
  __device__ Params prepare(const TensorEntry&) const { return {}; }
  __device__ State begin() const { return {}; }
  template <typename Value>  // an element, or a whole vector of elements
  __device__ void operator()(State&, const Params&, Value (&v)[kLists]) const {
    const Value a = v[0];
    v[0] = v[1];
    v[1] = a;
  }
  __device__ void end(State&) const {}
};

constexpr int kSumThreads = 1024;

template <typename Out>
__global__ void __launch_bounds__(kSumThreads)
    sum_partials_kernel(const double* partials, int64_t count, Out* result) {
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kSumThreads) sum += partials[i];
  sum = block_sum(sum);
  if (threadIdx.x == 0) *result = static_cast<Out>(sum);
}

// Calls f(T{}) with the CUDA type of `type`.
template <typename F>
cudaError_t with_element_type(ElementType type, F&& f) {
  switch (type) {
    case ElementType::kFloat: return f(float{});
    case ElementType::kHalf: return f(__half{});
    case ElementType::kBFloat16: return f(__nv_bfloat16{});
    case ElementType::kDouble: return f(double{});
  }
  return cudaErrorInvalidValue;
}

template <template <typename> class Op>
cudaError_t bit_op(int element_size, const TensorListLaunch& launch, cudaStream_t stream) {
  switch (element_size) {
    case 2: return multi_tensor_apply<uint16_t>(launch, Op<uint16_t>{}, stream);
    case 4: return multi_tensor_apply<uint32_t>(launch, Op<uint32_t>{}, stream);
    case 8: return multi_tensor_apply<uint64_t>(launch, Op<uint64_t>{}, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t squared_norm_partials(ElementType type, AscentScaling scaling,
                                  const TensorListLaunch& launch, double* partials,
                                  cudaStream_t stream) {
  return with_element_type(type, [&](auto element) {
    using T = decltype(element);
    switch (norm_term_of(scaling)) {
      case NormTerm::kGradient:
        return multi_tensor_apply<T>(launch, SquaredNormOp<T, NormTerm::kGradient>{partials}, stream);
      case NormTerm::kAdaptive:
        return multi_tensor_apply<T>(launch, SquaredNormOp<T, NormTerm::kAdaptive>{partials}, stream);
      case NormTerm::kFisher:
        return multi_tensor_apply<T>(launch, SquaredNormOp<T, NormTerm::kFisher>{partials}, stream);
    }
    return cudaErrorInvalidValue;
  });
}

cudaError_t sum_partials(const double* partials, int64_t count, ElementType result_type,
                         void* result, cudaStream_t stream) {
  if (result_type == ElementType::kFloat) {
    sum_partials_kernel<<<1, kSumThreads, 0, stream>>>(partials, count, static_cast<float*>(result));
  } else if (result_type == ElementType::kDouble) {
    sum_partials_kernel<<<1, kSumThreads, 0, stream>>>(partials, count, static_cast<double*>(result));
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t ascend_with_backup(ElementType type, AscentScaling scaling,
                               const TensorListLaunch& launch, cudaStream_t stream) {
  return with_element_type(type, [&](auto element) {
    using T = decltype(element);
    return multi_tensor_apply<T>(launch, AscendWithBackupOp<T>{scaling}, stream);
  });
}

cudaError_t ascend_from(ElementType type, AscentScaling scaling, const TensorListLaunch& launch,
                        cudaStream_t stream) {
  return with_element_type(type, [&](auto element) {
    using T = decltype(element);
    return multi_tensor_apply<T>(launch, AscendFromOp<T>{scaling}, stream);
  });
}

cudaError_t copy(int element_size, const TensorListLaunch& launch, cudaStream_t stream) {
  return bit_op<CopyOp>(element_size, launch, stream);
}

cudaError_t swap(int element_size, const TensorListLaunch& launch, cudaStream_t stream) {
  return bit_op<SwapOp>(element_size, launch, stream);
}

}  // namespace tram::cuda
