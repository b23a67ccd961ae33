// tram-gpt2: fine-tuning for causal language modelling with GPT-2, with any tram optimizer.
// Flags: tram-gpt2 --help, and examples/README.md.
#include <common/training/cli.h>
#include <common/training/tasks.h>
#include <common/training/trainer.h>

#include <iostream>

int main(int argc, char** argv) {
  using namespace tram::examples::training;
  constexpr Program program = Program::kGpt2;
  try {
    const Options options = parse_command_line(program, argc, argv);
    if (options.help) {
      std::cout << usage(program);
      return 0;
    }
    const auto task = make_causal_lm_task(options);
    train(*task, options);
    return 0;
  } catch (const std::exception& error) {
    return report_failure(program, error);
  }
}
