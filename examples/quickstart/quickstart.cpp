// Quickstart: one training loop, every tram method chosen by name.
//
// A small MLP learns a synthetic 3-class task; each method is evaluated on a
// held-out test set from the training distribution and on the same test set
// under a distribution shift (rotated and noised inputs). This is a smoke-scale
// demonstration of the API, not evidence about the methods: the study program
// (see README) is where methods are compared on real data.
//
//   tram-quickstart [--methods sam,tram-prev,...] [--steps N] [--seed S]
#include <tram/tram.h>

#include <torch/torch.h>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace {

struct Split {
  torch::Tensor x, y;
};

// Three Gaussian blobs; `angle` rotates the inputs and `noise` adds jitter.
Split blobs(int64_t per_class, double angle, double noise, uint64_t seed) {
  torch::manual_seed(seed);
  auto centers = torch::tensor({{2.0, 0.0}, {-1.0, 1.7}, {-1.0, -1.7}});
  auto y = torch::arange(3).repeat({per_class});
  auto x = centers.index_select(0, y) + 0.9 * torch::randn({3 * per_class, 2});
  auto rotation = torch::tensor({{std::cos(angle), -std::sin(angle)}, {std::sin(angle), std::cos(angle)}});
  return {x.matmul(rotation) + noise * torch::randn_like(x), y};
}

double accuracy(torch::nn::Sequential& model, const Split& split) {
  torch::NoGradGuard no_grad;
  tram::EvalModeGuard eval_mode(*model);
  auto predicted = model->forward(split.x).argmax(1);
  return predicted.eq(split.y).to(torch::kFloat64).mean().item<double>();
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) items.push_back(item);
  return items;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> methods = {"sgd", "sam", "asam", "fsam", "tram-prev", "tram-pre", "tram-noise",
                                      "tram-fisher", "trpo", "r3f", "mesa", "asam+trpo"};
  int steps = 300;
  uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--methods") methods = split_list(value());
    else if (arg == "--steps") steps = std::stoi(value());
    else if (arg == "--seed") seed = std::stoull(value());
    else {
      std::string names;
      for (const auto& name : tram::method_names()) names += (names.empty() ? "" : ", ") + name;
      std::cerr << "usage: tram-quickstart [--methods a,b,...] [--steps N] [--seed S]\n"
                << "methods: any of " << names << ", or <ascent>+<regularizer>\n";
      return 2;
    }
  }
  const Split train = blobs(100, 0.0, 0.0, seed + 1);
  const Split test = blobs(200, 0.0, 0.0, seed + 2);
  const Split shifted = blobs(200, 0.5, 0.5, seed + 2);

  std::cout << "tram quickstart (synthetic 3-class task, " << steps << " steps, SGD lr 0.05 momentum 0.9)\n"
            << std::left << std::setw(14) << "method" << std::right << std::setw(12) << "train loss"
            << std::setw(10) << "test acc" << std::setw(12) << "shift acc" << std::setw(14) << "mean radius"
            << "\n";
  for (const auto& method : methods) {
    torch::manual_seed(seed);
    torch::nn::Sequential model(torch::nn::Linear(2, 32), torch::nn::Tanh(), torch::nn::Linear(32, 3));
    std::unique_ptr<tram::SharpnessAware> optimizer;
    try {
      const bool adam = method.rfind("adam", 0) == 0;
      optimizer = tram::make_optimizer(method, model->parameters(),
                                       tram::parse_options(adam ? "lr=0.01" : "lr=0.05,momentum=0.9"));
    } catch (const c10::Error& e) {
      std::cerr << e.what_without_backtrace() << "\n";
      return 2;
    }
    optimizer->set_module(model.ptr());
    double loss = 0, radius = 0;
    for (int step = 0; step < steps; ++step) {
      // The forward closure: one forward pass; the optimizer runs the passes
      // its method needs and calls backward itself.
      auto report = optimizer->step([&](const tram::Pass& pass) -> tram::PassOutput {
        auto logits = model->forward(pass.perturb(train.x));
        return {torch::nn::functional::cross_entropy(logits, train.y), logits, {}};
      });
      loss = report.loss;
      radius += report.radius.empty() ? 0.0 : report.radius[0];
    }
    std::cout << std::left << std::setw(14) << method << std::right << std::fixed << std::setprecision(4)
              << std::setw(12) << loss << std::setw(10) << accuracy(model, test) << std::setw(12)
              << accuracy(model, shifted) << std::setw(14) << std::scientific << std::setprecision(2)
              << radius / steps << std::defaultfloat << "\n";
  }
  return 0;
}
