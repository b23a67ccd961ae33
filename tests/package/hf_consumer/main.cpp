// Loads a GPT-2 checkpoint directory with the installed tram::hf and checks
// its logits against the ones Hugging Face's transformers computed for the
// same inputs (io.safetensors, written with the fixture by
// tools/make_model_fixtures.py).
//   consumer <checkpoint directory>
#include <tram/hf/models/gpt2.h>
#include <tram/hf/safetensors.h>

#include <tram/eval_mode.h>

#include <torch/torch.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: consumer <gpt2 checkpoint directory with io.safetensors>\n";
    return 2;
  }
  try {
    const std::filesystem::path directory = argv[1];
    auto loaded = tram::hf::models::load_gpt2(directory);
    std::cout << loaded.report.summary() << "\n";
    const auto io = tram::hf::safetensors::load((directory / "io.safetensors").string());
    torch::NoGradGuard no_grad;
    tram::EvalModeGuard eval_mode(*loaded.model);
    const auto logits = loaded.model->forward(io.at("input_ids"), io.at("attention_mask"));
    const auto& expected = io.at("logits");
    if (logits.sizes() != expected.sizes()) {
      std::cerr << "consumer: logits " << logits.sizes() << ", expected " << expected.sizes() << "\n";
      return 1;
    }
    // The tolerance of the library's own parity tests (float32, 2 layers).
    const double difference = (logits - expected).abs().max().item<double>();
    std::cout << "consumer: GPT-2 logits " << logits.sizes() << ", max |tram::hf - transformers| = " << difference
              << "\n";
    return difference <= 1e-5 ? 0 : 1;
  } catch (const std::exception& error) {
    std::cerr << "consumer: " << error.what() << "\n";
    return 1;
  }
}
