// What the checkpoint fixtures of tests/checkpoints/v2 were made with: the
// methods, their options and the noise, shared by the program that writes
// them (make_checkpoints.cpp) and the test that reads them.
#pragma once

#include <tram/tram.h>

#include <string>
#include <vector>

namespace tram::test {

// Every parameter set (θt-1, θ0, EMA), every target and regularizer.
inline std::vector<std::string> checkpoint_fixture_methods() {
  return {"sam", "asam", "fsam", "tram-prev", "tram-pre", "tram-noise", "tram-fisher",
          "trpo", "r3f", "mesa", "asam+trpo", "tram-pre+mesa"};
}

inline tram::OptionMap checkpoint_fixture_options(const std::string& method) {
  // TRAM's scale makes its ascent large enough to matter.
  return tram::parse_options(method.rfind("tram-", 0) == 0 ? "base=adam,lr=0.01,scale=10" : "base=adam,lr=0.01");
}

// The same noise on every noisy pass: the fixtures must not depend on the
// random generator's stream.
inline torch::Tensor checkpoint_fixture_noise(const torch::Tensor& embeddings, const tram::NoiseOptions& options,
                                              const tram::Pass&) {
  return torch::arange(embeddings.numel(), embeddings.options()).reshape(embeddings.sizes()).sin() * options.sigma();
}

}  // namespace tram::test
