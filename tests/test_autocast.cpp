// Mixed precision: every factory method stepped under CPU autocast to bf16,
// the way a training loop wraps its steps in torch.autocast("cpu", bfloat16).
#include <tram/tram.h>

#include <ATen/autocast_mode.h>

#include <cmath>
#include <iostream>
#include <set>
#include <string>
#include <vector>

namespace {

using torch::Tensor;

// What torch.autocast("cpu", dtype=torch.bfloat16) does on entry and exit.
// The region deliberately spans whole optimizer steps (several passes and
// base steps), so that autocast's cast cache lives across parameter updates.
class CpuAutocastBf16 {
 public:
  CpuAutocastBf16()
      : enabled_(at::autocast::is_autocast_enabled(at::kCPU)), dtype_(at::autocast::get_autocast_dtype(at::kCPU)) {
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCPU, true);
  }
  ~CpuAutocastBf16() {
    at::autocast::set_autocast_enabled(at::kCPU, enabled_);
    at::autocast::set_autocast_dtype(at::kCPU, dtype_);
    at::autocast::clear_cache();
  }
  CpuAutocastBf16(const CpuAutocastBf16&) = delete;
  CpuAutocastBf16& operator=(const CpuAutocastBf16&) = delete;

 private:
  bool enabled_;
  at::ScalarType dtype_;
};

// A two-layer MLP on a learnable task: the labels are the argmax of a fixed
// linear teacher. Inputs go through Pass::perturb (the "embeddings").
// at::linear, as PyTorch's nn.Linear calls it: autocast caches the bf16 casts
// of both weight and bias (torch::nn::Linear passes weight.t(), a view, which
// autocast does not cache, so it would exercise the cache through the bias only).
struct Net : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 16));
    fc2 = register_module("fc2", torch::nn::Linear(16, 3));
  }
  Tensor forward(const Tensor& x) {
    const Tensor hidden = torch::tanh(torch::linear(x, fc1->weight, fc1->bias));
    return torch::linear(hidden, fc2->weight, fc2->bias);
  }
};

struct Task {
  std::shared_ptr<Net> net;
  Tensor x, y;
  explicit Task(int64_t seed) {
    torch::manual_seed(seed);
    net = std::make_shared<Net>();
    x = torch::randn({64, 8});
    y = torch::matmul(x, torch::randn({8, 3})).argmax(-1);
  }
  // fp32, no autocast: the loss the test judges training by.
  double loss() {
    torch::NoGradGuard no_grad;
    return torch::nn::functional::cross_entropy(net->forward(x), y).item<double>();
  }
};

std::vector<std::string> methods_under_test() {
  std::vector<std::string> names = tram::method_names();
  for (const std::string combined : {"asam+trpo", "sam+r3f", "tram-prev+mesa"}) names.push_back(combined);
  return names;
}

bool all_fp32_and_finite(const std::vector<Tensor>& params) {
  for (const auto& p : params) {
    if (p.scalar_type() != torch::kFloat32 || !torch::isfinite(p).all().item<bool>()) return false;
  }
  return true;
}

TEST(Autocast, EveryMethodTrainsUnderCpuBf16Autocast) {
  constexpr int kSteps = 25;
  for (const auto& method : methods_under_test()) {
    SCOPED_TRACE(method);
    Task task(3);
    // TRAM's radius is scale * d; scale 50 makes its ascent visible in bf16,
    // and max_radius = 0.5 (ASAM's rho, docs/ALGORITHMS.md §3) bounds it once θ0 is far away.
    const bool tram_radius = method.rfind("tram-", 0) == 0 && method.rfind("tram-fisher", 0) != 0;
    auto opt = tram::make_optimizer(
        method, task.net->parameters(),
        tram::parse_options(tram_radius ? "lr=0.5,scale=50,max_radius=0.5" : "lr=0.5"));
    opt->set_module(task.net);
    // Pass 1 on clean inputs, then pass 2 at w + e on the same inputs.
    const bool has_ascent = opt->method().has_ascent() && !opt->method().first_pass_noise();
    const double initial = task.loss();

    std::set<c10::ScalarType> logit_dtypes;
    double max_distance = 0, max_regularizer = 0, max_perturbed_change = 0;
    Tensor clean_logits;
    {
      CpuAutocastBf16 autocast;
      for (int step = 0; step < kSteps; ++step) {
        const auto report = opt->step([&](const tram::Pass& pass) -> tram::PassOutput {
          Tensor logits = task.net->forward(pass.perturb(task.x));
          logit_dtypes.insert(logits.scalar_type());
          if (pass.kind() == tram::PassKind::kClean) clean_logits = logits.detach().to(torch::kFloat);
          if (pass.kind() == tram::PassKind::kPerturbed && clean_logits.defined()) {
            // Pass 2 runs at w + e: its outputs must differ from pass 1's
            // (a stale autocast cast of w would make them identical).
            max_perturbed_change = std::max(
                max_perturbed_change, (logits.detach().to(torch::kFloat) - clean_logits).abs().max().item<double>());
          }
          return {torch::nn::functional::cross_entropy(logits.to(torch::kFloat), task.y), logits, {}};
        });
        ASSERT_TRUE(std::isfinite(report.loss)) << "step " << step;
        ASSERT_TRUE(std::isfinite(report.distance) && report.distance >= 0) << "step " << step << ": " << report.distance;
        ASSERT_TRUE(std::isfinite(report.regularizer) && report.regularizer >= 0)
            << "step " << step << ": " << report.regularizer;
        ASSERT_TRUE(all_fp32_and_finite(task.net->parameters())) << "step " << step;
        max_distance = std::max(max_distance, report.distance);
        max_regularizer = std::max(max_regularizer, report.regularizer.value());
      }
    }
    // Autocast was active: the linear layers ran in bf16 on every pass.
    EXPECT_EQ(logit_dtypes, std::set<c10::ScalarType>{torch::kBFloat16});
    // The parameters, the gradients the base used, and the optimizer's
    // parameter-set buffers stay fp32.
    for (const auto& p : task.net->parameters()) {
      EXPECT_EQ(p.scalar_type(), torch::kFloat32);
      if (p.grad().defined()) EXPECT_EQ(p.grad().scalar_type(), torch::kFloat32);
    }
    // Learning happened (a forward through stale bf16 weights would not learn).
    const double final = task.loss();
    EXPECT_LT(final, 0.5 * initial) << "initial " << initial << " final " << final;
    std::cout << "  " << method << ": loss " << initial << " -> " << final << "\n";
    if (has_ascent) {
      EXPECT_GT(max_perturbed_change, 0.0);
    }
    if (opt->method().trust_region() != nullptr) {
      // TRAM's distance compares two different forwards (other parameters or
      // noised inputs); after the first step it is positive.
      EXPECT_GT(max_distance, 0.0);
    }
    if (opt->method().regularizer() != nullptr) EXPECT_GT(max_regularizer, 0.0);
  }
  EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
}

// The two-call API under one autocast region: the caller's pass 2 must see
// w + e and the next step's pass 1 the updated w.
TEST(Autocast, TwoCallApiPassesSeeTheCurrentWeights) {
  Task task(5);
  auto opt = tram::make_optimizer("sam", task.net->parameters(), tram::parse_options("lr=0.5,rho=0.5"));
  CpuAutocastBf16 autocast;
  Tensor previous;
  for (int step = 0; step < 3; ++step) {
    opt->zero_grad();
    Tensor first = task.net->forward(task.x);
    ASSERT_EQ(first.scalar_type(), torch::kBFloat16);
    if (previous.defined()) {
      EXPECT_GT((first.detach().to(torch::kFloat) - previous).abs().max().item<double>(), 0.0) << "step " << step;
    }
    torch::nn::functional::cross_entropy(first.to(torch::kFloat), task.y).backward();
    opt->first_step();
    opt->zero_grad();
    Tensor second = task.net->forward(task.x);
    EXPECT_GT((second.detach() - first.detach()).abs().max().item<double>(), 0.0) << "step " << step;
    torch::nn::functional::cross_entropy(second.to(torch::kFloat), task.y).backward();
    opt->second_step();
    previous = first.detach().to(torch::kFloat);
  }
}

}  // namespace
