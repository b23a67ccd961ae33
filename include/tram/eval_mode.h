// Puts a module tree in eval mode for a scope and puts every submodule's own
// training flag back afterwards, also when the scope is left by an exception.
//
//   {
//     tram::EvalModeGuard eval(*model);   // dropout off, BatchNorm uses running stats
//     auto logits = model->forward(x);
//   }                                     // each submodule's own mode is back
//
// Module::train(bool) is recursive, so a bare eval() ... train() pair turns on
// training in submodules that were deliberately frozen in eval mode; this
// guard records each module's flag instead. The optimizer uses it for its
// trust-region target passes (SharpnessAware::set_module).
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <utility>
#include <vector>

namespace tram {

class EvalModeGuard {
 public:
  // A null module makes the guard a no-op.
  explicit EvalModeGuard(torch::nn::Module* module);
  explicit EvalModeGuard(torch::nn::Module& module) : EvalModeGuard(&module) {}
  ~EvalModeGuard();
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> modes_;
};

}  // namespace tram
