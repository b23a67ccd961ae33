// Steps SAM on a least-squares problem and checks that the loss went down.
#include <tram/tram.h>

#include <torch/torch.h>

#include <iostream>

int main() {
  torch::manual_seed(0);
  torch::nn::Linear model(4, 1);
  auto x = torch::randn({32, 4});
  auto y = x.sum(1, true);
  auto base = std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
  tram::SAM optimizer(base, tram::SAMOptions().rho(0.05));
  auto closure = [&] {
    optimizer.zero_grad();
    auto loss = torch::mse_loss(model(x), y);
    loss.backward();
    return loss;
  };
  const double first = optimizer.step(closure).item<double>();
  double last = first;
  for (int i = 0; i < 50; ++i) last = optimizer.step(closure).item<double>();
  std::cout << "consumer: SAM loss " << first << " -> " << last << "\n";
  return last < 0.1 * first ? 0 : 1;
}
