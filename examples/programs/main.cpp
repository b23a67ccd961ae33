// tram-vit, tram-gpt2 and tram-xlmr: fine-tuning a Hugging Face checkpoint
// with any tram optimizer, for image classification (ViT), causal language
// modelling (GPT-2) and sequence classification (BERT / RoBERTa / XLM-R).
// One source: examples/CMakeLists.txt compiles it once per program with
// TRAM_PROGRAM naming the tram::hf::training::Program; the task policy
// (make_task) and every flag follow from it.
// Flags: tram-<program> --help, and examples/README.md.
#include <tram/hf/training/cli.h>
#include <tram/hf/training/tasks.h>
#include <tram/hf/training/trainer.h>

#include <iostream>

#ifndef TRAM_PROGRAM
#error "compile with -DTRAM_PROGRAM=kVit, kGpt2 or kXlmr (see examples/CMakeLists.txt)"
#endif

int main(int argc, char** argv) {
  using namespace tram::hf::training;
  constexpr Program program = Program::TRAM_PROGRAM;
  try {
    const Options options = parse_command_line(program, argc, argv);
    if (options.help) {
      std::cout << usage(program);
      return 0;
    }
    const auto task = make_task(options);
    train(*task, options);
    return 0;
  } catch (const std::exception& error) {
    return report_failure(program, error);
  }
}
