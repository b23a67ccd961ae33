// The launches src/ops_cuda.cpp cuts tensor lists into
// (src/multi_tensor_launches.h): every tensor exactly once, grouped by kind
// in key order, at most kMaxLaunchTensors per launch, chunk offsets that tile
// each launch, and no heap allocation per call. The planner only reads
// pointers and sizes, so CPU tensors stand in for CUDA ones and these tests
// run without a GPU (the kernels themselves: tests/cuda/test_cuda_ops.cpp
// on a GPU, tests/cuda/emulation without one).
#ifdef TRAM_WITH_CUDA

#include "../../src/multi_tensor_launches.h"
#include "../allocation_counter.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <vector>

namespace {

using torch::Tensor;
using tram::cuda::chunks_of;
using tram::cuda::kChunkElements;
using tram::cuda::kMaxLaunchTensors;
using tram::cuda::TensorListLaunch;
using tram::ops::cuda_impl::for_each_launch;

int dtype_key(const Tensor& t) { return static_cast<int>(t.scalar_type()); }

// GPT-2 small's parameter list (148 tensors) with its layer structure but
// narrow widths, so that the test is quick; a few tensors are chunk-sized
// and one spans several chunks.
std::vector<Tensor> gpt2_like(torch::ScalarType dtype) {
  const auto options = torch::TensorOptions().dtype(dtype);
  std::vector<Tensor> tensors = {torch::zeros({3 * kChunkElements + 5}, options),  // wte
                                 torch::zeros({64, 16}, options)};                 // wpe
  for (int layer = 0; layer < 12; ++layer) {
    for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
             {16}, {16}, {16, 48}, {48}, {16, 16}, {16}, {16}, {16}, {16, kChunkElements / 16}, {64}, {64, 16}, {16}}) {
      tensors.push_back(torch::zeros(shape, options));
    }
  }
  tensors.push_back(torch::zeros({16}, options));
  tensors.push_back(torch::zeros({16}, options));
  return tensors;
}

struct Seen {
  int key;
  TensorListLaunch plan;
};

TEST(MultiTensorLaunches, EveryTensorOnceGroupedByKindInKeyOrderWithOnlyTheLastLaunchOfAKindShort) {
  // Three lists of 148 + 3 tensors: fp32 and bf16 interleaved, and three
  // empty ones that no launch may hold.
  std::vector<Tensor> params = gpt2_like(torch::kFloat);
  for (size_t i = 1; i < params.size(); i += 3) params[i] = params[i].to(torch::kBFloat16);
  params.insert(params.begin() + 5, torch::zeros({0}));
  params.insert(params.begin() + 70, torch::zeros({2, 0}, torch::kBFloat16));
  params.push_back(torch::zeros({0, 7}));
  std::vector<Tensor> grads, backups;
  tram::ops::AscentSpec spec;
  for (size_t i = 0; i < params.size(); ++i) {
    grads.push_back(torch::zeros_like(params[i]));
    backups.push_back(torch::zeros_like(params[i]));
    spec.eta.push_back(0.5 + static_cast<double>(i));
    spec.coef.push_back(-1.0 - static_cast<double>(i));
  }

  std::vector<Seen> launches;
  ASSERT_EQ(for_each_launch({params, grads, backups}, &spec, dtype_key,
                            [&](int key, const TensorListLaunch& plan) {
                              launches.push_back({key, plan});
                              return cudaSuccess;
                            }),
            cudaSuccess);

  std::vector<size_t> order;  // the tensors' indices, in launch order
  for (const Seen& seen : launches) {
    ASSERT_GT(seen.plan.num_tensors, 0);
    ASSERT_LE(seen.plan.num_tensors, kMaxLaunchTensors);
    int64_t chunk = 0;
    for (int e = 0; e < seen.plan.num_tensors; ++e) {
      const auto& entry = seen.plan.entries[e];
      size_t index = 0;
      while (index < params.size() && params[index].data_ptr() != entry.data[0]) ++index;
      ASSERT_LT(index, params.size()) << "an entry that is no parameter";
      order.push_back(index);
      EXPECT_EQ(dtype_key(params[index]), seen.key);
      EXPECT_EQ(entry.data[1], grads[index].data_ptr());
      EXPECT_EQ(entry.data[2], backups[index].data_ptr());
      EXPECT_EQ(entry.numel, params[index].numel());
      EXPECT_EQ(entry.eta, spec.eta[index]);
      EXPECT_EQ(entry.coef, spec.coef[index]);
      EXPECT_EQ(entry.first_chunk, chunk) << "chunks must tile the launch from 0";
      chunk += chunks_of(entry.numel);
    }
    EXPECT_EQ(seen.plan.num_chunks, chunk);
  }
  // fp32 first (ScalarType Float < BFloat16), each kind in list order, a
  // launch short of full only at the end of its kind.
  std::vector<size_t> expected;
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].scalar_type() == dtype && params[i].numel() > 0) expected.push_back(i);
    }
  }
  EXPECT_EQ(order, expected);
  for (size_t l = 0; l + 1 < launches.size(); ++l) {
    if (launches[l].key == launches[l + 1].key) EXPECT_EQ(launches[l].plan.num_tensors, kMaxLaunchTensors);
  }
  // 99 fp32 and 49 bf16 non-empty tensors: 64 + 35, and 49.
  EXPECT_EQ(launches.size(), 3u);
}

TEST(MultiTensorLaunches, PlanningAllocatesNothing) {
  const std::vector<Tensor> params = gpt2_like(torch::kFloat);
  std::vector<Tensor> grads, backups;
  for (const Tensor& p : params) {
    grads.push_back(torch::zeros_like(p));
    backups.push_back(torch::zeros_like(p));
  }
  tram::ops::AscentSpec spec;
  spec.eta.assign(params.size(), 0.01);
  spec.coef.assign(params.size(), 0.05);
  // The counter sees allocations at all (else the zero below would prove nothing).
  const int64_t before_vector = tram::testing::allocations_on_this_thread();
  std::vector<int> probe(3);
  EXPECT_EQ(tram::testing::allocations_on_this_thread() - before_vector, 1);

  int launches = 0;
  int64_t chunks = 0;
  const int64_t before = tram::testing::allocations_on_this_thread();
  const cudaError_t result = for_each_launch({params, grads, backups}, &spec, dtype_key,
                                             [&](int, const TensorListLaunch& plan) {
                                               ++launches;
                                               chunks += plan.num_chunks;
                                               return cudaSuccess;
                                             });
  const int64_t allocated = tram::testing::allocations_on_this_thread() - before;
  EXPECT_EQ(result, cudaSuccess);
  EXPECT_EQ(allocated, 0) << "host allocations while planning the launches of 148 tensors";
  EXPECT_EQ(launches, 3);
  int64_t expected_chunks = 0;
  for (const Tensor& p : params) expected_chunks += chunks_of(p.numel());
  EXPECT_EQ(chunks, expected_chunks);
}

TEST(MultiTensorLaunches, TheFirstLaunchErrorStopsThePlanning) {
  const std::vector<Tensor> params = gpt2_like(torch::kFloat);
  int launches = 0;
  const cudaError_t result = for_each_launch({params}, nullptr, dtype_key, [&](int, const TensorListLaunch&) {
    ++launches;
    return cudaErrorInvalidConfiguration;
  });
  EXPECT_EQ(result, cudaErrorInvalidConfiguration);
  EXPECT_EQ(launches, 1);
}

TEST(MultiTensorLaunches, ListsWithoutElementsMakeNoLaunch) {
  const std::vector<Tensor> empty = {torch::zeros({0}), torch::zeros({3, 0})};
  int launches = 0;
  EXPECT_EQ(for_each_launch({empty, empty}, nullptr, dtype_key,
                            [&](int, const TensorListLaunch&) {
                              ++launches;
                              return cudaSuccess;
                            }),
            cudaSuccess);
  EXPECT_EQ(launches, 0);
}

TEST(MultiTensorLaunches, MoreListsThanAKernelTakesAreRejected) {
  const std::vector<Tensor> list = {torch::zeros({3})};
  try {
    for_each_launch({list, list, list, list}, nullptr, dtype_key,
                    [](int, const TensorListLaunch&) { return cudaSuccess; });
    FAIL() << "four lists were accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("1 to 3 tensor lists per launch, not 4"), std::string::npos) << e.what();
  }
}

}  // namespace

#endif  // TRAM_WITH_CUDA
