// The command line shared by tram-vit, tram-gpt2 and tram-xlmr: the same
// flags everywhere, with per-program defaults from the paper
// (docs/ALGORITHMS.md §10; language: Adam with kPaperAdamBetas, lr 2e-5,
// poly-warmup; vision: SGD, lr 5e-4, cosine, no warm-up).
//
//   const Options options = parse_command_line(Program::kGpt2, argc, argv);
//   if (options.help) { std::cout << usage(Program::kGpt2); return 0; }
//
// Unknown flags, missing values and bad choices throw UsageError with the
// valid choices (method names from tram::method_names(), schedule names, ...).
#pragma once

#include <tram/factory.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tram::hf::training {

// The paper's Adam betas (docs/ALGORITHMS.md §10): the language programs'
// default, and the study's for every Adam it makes.
struct AdamBetas {
  double beta1, beta2;
};
inline constexpr AdamBetas kPaperAdamBetas{0.9, 0.99};
// Sets "beta1" and "beta2" of `options` to kPaperAdamBetas where they are not given.
void default_to_paper_betas(tram::OptionMap& options);

enum class Program { kVit, kGpt2, kXlmr };

// "tram-vit", "tram-gpt2", "tram-xlmr".
const char* program_name(Program program);

class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct Options {
  Program program = Program::kVit;
  bool help = false;

  std::filesystem::path model;      // --model: a Hugging Face checkpoint directory
  std::filesystem::path tokenizer;  // --tokenizer: default the model directory
  std::string optimizer;            // --optimizer: a tram::make_optimizer name
  std::string optimizer_options;    // --optimizer-options, as given
  double lr = 0.0;
  std::string schedule;
  std::optional<int64_t> warmup_steps;  // unset: the program's default (see usage())
  int64_t steps = 0;                    // 0: from --epochs
  double epochs = 0.0;
  int64_t batch_size = 0;  // global, over all ranks and micro-batches
  int64_t grad_accum = 1;
  std::optional<double> max_grad_norm;
  uint64_t seed = 0;
  std::string device = "cpu";
  std::string dtype = "float32";
  std::string train;                                     // --train PATH
  std::vector<std::pair<std::string, std::string>> eval;  // --eval NAME=PATH, in order
  std::filesystem::path out = "tram-run";
  bool resume = false;
  int64_t eval_every = 0;  // 0: only before training and at the end
  int64_t save_every = 0;  // 0: only at the end
  std::optional<int64_t> stop_after;  // stop (with a resumable state) after this many steps
  std::optional<int64_t> num_labels;
  int64_t limit = 0;       // take only the first N examples of every set (0: all)
  int64_t max_length = 0;  // tokens per example (xlmr) or block (gpt2); 0: the program's default
  int64_t eval_batch_size = 0;
  int world_size = 1;
  int rank = 0;
  std::string rendezvous;
  // The CUDA device of this rank (--device cuda): LOCAL_RANK under a launcher, else 0.
  int local_rank = 0;
  // Seconds a collective may wait for the other ranks before the run fails
  // naming it (a rank died or hangs).
  int64_t collective_timeout = 300;
  bool quiet = false;

  // The options handed to tram::make_optimizer: --optimizer-options, with the
  // program's defaults filled in for keys not given (base, betas, lr).
  tram::OptionMap optimizer_option_map() const;
  // The rate the schedule peaks at, and its warm-up (resolved default).
  int64_t resolved_warmup(int64_t total_steps) const;
};

Options defaults(Program program);
Options parse_command_line(Program program, const std::vector<std::string>& arguments);
Options parse_command_line(Program program, int argc, char** argv);
std::string usage(Program program);

// Prints "<program>: error: <first line of what>" to stderr; returns the exit
// code: 2 for a UsageError (with a pointer to --help), 1 otherwise.
int report_failure(Program program, const std::exception& error);

}  // namespace tram::hf::training
