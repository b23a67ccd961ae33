// Small problems shared by the tests: models whose gradients the tests can
// compute independently (autograd on a functional copy), in float64.
#pragma once

#include <tram/tram.h>

#include <functional>
#include <string>
#include <vector>

namespace tram::test {

// The message of the c10::Error that f throws ("" if it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what();
  }
  return "";
}

// A linear softmax classifier, logits = x W^T + b, cross-entropy loss.
struct Problem {
  torch::Tensor weight, bias, x, y;

  explicit Problem(int64_t seed = 7, int64_t rows = 8, int64_t in = 4, int64_t classes = 3) {
    torch::manual_seed(seed);
    auto opts = torch::TensorOptions().dtype(torch::kFloat64);
    weight = (torch::randn({classes, in}, opts) * 0.5).requires_grad_(true);
    bias = (torch::randn({classes}, opts) * 0.1).requires_grad_(true);
    x = torch::randn({rows, in}, opts);
    y = torch::randint(0, classes, {rows}, torch::kLong);
  }

  std::vector<torch::Tensor> params() const { return {weight, bias}; }
  std::vector<torch::Tensor> values() const { return {weight.detach().clone(), bias.detach().clone()}; }

  static torch::Tensor loss_at(const std::vector<torch::Tensor>& w, const torch::Tensor& inputs,
                               const torch::Tensor& labels) {
    return torch::nn::functional::cross_entropy(torch::addmm(w[1], inputs, w[0].t()), labels);
  }

  // The gradient of the loss at parameters w (not the model's).
  std::vector<torch::Tensor> grad(const std::vector<torch::Tensor>& w) const {
    std::vector<torch::Tensor> leaves;
    for (const auto& t : w) leaves.push_back(t.detach().clone().requires_grad_(true));
    auto loss = loss_at(leaves, x, y);
    return torch::autograd::grad({loss}, leaves);
  }

  torch::Tensor logits(const torch::Tensor& inputs) const { return torch::addmm(bias, inputs, weight.t()); }
  torch::Tensor loss() const { return torch::nn::functional::cross_entropy(logits(x), y); }

  // The standard LibTorch closure.
  std::function<torch::Tensor()> loss_closure(torch::optim::Optimizer& opt) const {
    return [this, &opt] {
      opt.zero_grad();
      auto l = loss();
      l.backward();
      return l;
    };
  }

  tram::PassOutput forward(const tram::Pass& pass) const {
    auto out = logits(pass.perturb(x));
    return {torch::nn::functional::cross_entropy(out, y), out, {}};
  }
  tram::ForwardClosure forward_closure() const {
    return [this](const tram::Pass& pass) { return forward(pass); };
  }
};

}  // namespace tram::test
