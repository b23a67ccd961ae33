// tram::make_nccl_process_group: data-parallel training over NCCL (one GPU
// per rank). Without GPUs (CI), only the error paths run; the 2-rank test
// needs 2 GPUs and a build with NCCL, and skips otherwise.
#include <tram/tram.h>

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include "test_util.h"

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

namespace {

using torch::Tensor;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string rendezvous_file(const std::string& name) {
  auto path = std::filesystem::temp_directory_path() /
              ("tram-nccl-" + name + "-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::remove(path);
  return "file://" + path.string();
}

std::string nccl_error(const std::string& rendezvous, int rank, int world_size) {
  try {
    tram::make_nccl_process_group(rendezvous, rank, world_size, std::chrono::seconds(5));
  } catch (const c10::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Nccl, WithoutAGpuTheHelperSaysWhatIsMissing) {
  if (torch::cuda::device_count() > 0) GTEST_SKIP() << "a CUDA device is present; this test is for machines without";
  // World size 2 with no second rank: a helper that went to the rendezvous
  // first would wait there instead of failing with this message.
  const std::string error = nccl_error(rendezvous_file("nogpu"), 0, 2);
  EXPECT_TRUE(contains(error, "tram::make_nccl_process_group")) << error;
  EXPECT_TRUE(contains(error, "NCCL")) << error;
  if (tram::has_nccl()) {
    EXPECT_TRUE(contains(error, "NCCL needs a CUDA GPU but no CUDA device is available")) << error;
  } else {
    EXPECT_TRUE(contains(error, "tram was built without NCCL support")) << error;
    EXPECT_TRUE(contains(error, "TRAM_WITH_NCCL=ON")) << error;
  }
}

TEST(Nccl, InvalidRankIsRejected) {
  if (!tram::has_nccl()) GTEST_SKIP() << "tram was built without NCCL (TRAM_WITH_NCCL=OFF)";
  const std::string error = nccl_error(rendezvous_file("rank"), 2, 2);
  EXPECT_TRUE(contains(error, "tram::make_nccl_process_group: invalid rank 2 for world size 2")) << error;
}

double max_diff(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, (a[i].cpu() - b[i].cpu()).abs().max().item<double>());
  return diff;
}

// Rank `rank` of `ranks` (0 of 1: one process on the whole batch) trains on
// its rows of the batch, on CUDA device `rank`.
std::vector<Tensor> run_on_gpu(const tram::test::Problem& p, const std::string& method, int rank, int ranks,
                               c10::intrusive_ptr<c10d::Backend> group) {
  const torch::Device device(torch::kCUDA, static_cast<c10::DeviceIndex>(rank));
  Tensor weight = p.weight.detach().to(device).requires_grad_(true);
  Tensor bias = p.bias.detach().to(device).requires_grad_(true);
  const int64_t rows = p.x.size(0) / ranks;
  const Tensor x = p.x.narrow(0, rank * rows, rows).to(device);
  const Tensor y = p.y.narrow(0, rank * rows, rows).to(device);
  auto opt = tram::make_optimizer(method, std::vector<Tensor>{weight, bias}, tram::parse_options("lr=0.5"));
  if (group) opt->set_process_group(group);
  for (int step = 0; step < 3; ++step) {
    opt->step([&](const tram::Pass& pass) -> tram::PassOutput {
      Tensor logits = torch::addmm(bias, pass.perturb(x), weight.t());
      return {torch::nn::functional::cross_entropy(logits, y), logits, {}};
    });
  }
  return {weight.detach().cpu(), bias.detach().cpu()};
}

TEST(Nccl, TwoGpuRanksEqualOneProcessOnTheWholeBatch) {
  if (!tram::has_nccl()) GTEST_SKIP() << "tram was built without NCCL (TRAM_WITH_NCCL=OFF)";
  const auto gpus = torch::cuda::device_count();
  if (gpus < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << gpus;
  for (const std::string method : {"sam", "tram-prev"}) {
    // float64, the same seed for every rank; built before the threads start:
    // the global generator is not thread-safe.
    std::vector<tram::test::Problem> problems(3);
    const auto expected = run_on_gpu(problems[2], method, 0, 1, {});
    const std::string store = rendezvous_file(method);
    std::vector<std::vector<Tensor>> result(2);
    std::vector<std::string> errors(2);
    std::vector<std::thread> ranks;
    for (int rank = 0; rank < 2; ++rank) {
      ranks.emplace_back([&, rank] {
        try {
          auto group = tram::make_nccl_process_group(store, rank, 2, std::chrono::seconds(60));
          result[rank] = run_on_gpu(problems[rank], method, rank, 2, group);
        } catch (const std::exception& e) {
          errors[rank] = e.what();
        }
      });
    }
    for (auto& r : ranks) r.join();
    for (int rank = 0; rank < 2; ++rank) {
      ASSERT_EQ(errors[rank], "") << method << " rank " << rank;
      EXPECT_LE(max_diff(expected, result[rank]), 1e-12) << method << " rank " << rank;
    }
    EXPECT_TRUE(torch::equal(result[0][0], result[1][0])) << method;
  }
}

}  // namespace
