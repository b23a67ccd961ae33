#include <tram/eval_mode.h>

namespace tram {

// The flags are recorded and put back in pre-order: a parent's train(flag),
// which recurses, is then overridden by each child's own flag.
EvalModeGuard::EvalModeGuard(torch::nn::Module* module) {
  if (module == nullptr) return;
  for (const auto& m : module->modules(/*include_self=*/true)) modes_.emplace_back(m, m->is_training());
  module->eval();
}

EvalModeGuard::~EvalModeGuard() {
  for (auto& [m, training] : modes_) m->train(training);
}

}  // namespace tram
