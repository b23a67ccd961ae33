// tram-xlmr: fine-tuning for sequence classification with BERT / RoBERTa / XLM-R, with any tram optimizer.
// Flags: tram-xlmr --help, and examples/README.md.
#include <common/training/cli.h>
#include <common/training/tasks.h>
#include <common/training/trainer.h>

#include <iostream>

int main(int argc, char** argv) {
  using namespace tram::examples::training;
  constexpr Program program = Program::kXlmr;
  try {
    const Options options = parse_command_line(program, argc, argv);
    if (options.help) {
      std::cout << usage(program);
      return 0;
    }
    const auto task = make_text_classification_task(options);
    train(*task, options);
    return 0;
  } catch (const std::exception& error) {
    return report_failure(program, error);
  }
}
