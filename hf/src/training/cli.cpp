#include <tram/hf/training/cli.h>

#include <tram/hf/training/schedule.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

namespace tram::hf::training {

namespace {

bool language(Program program) { return program != Program::kVit; }

std::string join(const std::vector<std::string>& names) {
  std::string text;
  for (const auto& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

void check_choice(const std::string& flag, const std::string& value, const std::vector<std::string>& valid) {
  if (std::find(valid.begin(), valid.end(), value) == valid.end()) {
    throw UsageError(flag + ": unknown choice '" + value + "'; valid: " + join(valid));
  }
}

// The method names accepted by --optimizer: every factory name, and a
// sharpness-aware method joined to a regularizer with '+'.
void check_method(const std::string& name) {
  const auto& names = tram::method_names();
  const auto plus = name.find('+');
  const bool known = plus == std::string::npos
                         ? std::find(names.begin(), names.end(), name) != names.end()
                         : std::find(names.begin(), names.end(), name.substr(0, plus)) != names.end() &&
                               std::find(names.begin(), names.end(), name.substr(plus + 1)) != names.end();
  if (!known) {
    throw UsageError("--optimizer: unknown method '" + name + "'; valid: " + join(names) +
                     " (or a sharpness-aware method + a regularizer, e.g. asam+trpo)");
  }
}

int64_t to_integer(const std::string& flag, const std::string& value, int64_t minimum) {
  errno = 0;
  char* end = nullptr;
  const long long number = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || end != value.c_str() + value.size() || errno != 0) {
    throw UsageError(flag + ": expected an integer, got '" + value + "'");
  }
  if (number < minimum) throw UsageError(flag + ": must be >= " + std::to_string(minimum) + ", got " + value);
  return number;
}

double to_number(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  const double number = std::strtod(value.c_str(), &end);
  if (value.empty() || end != value.c_str() + value.size() || !(number >= 0.0)) {
    throw UsageError(flag + ": expected a non-negative number, got '" + value + "'");
  }
  return number;
}

}  // namespace

const char* program_name(Program program) {
  switch (program) {
    case Program::kVit: return "tram-vit";
    case Program::kGpt2: return "tram-gpt2";
    case Program::kXlmr: return "tram-xlmr";
  }
  return "tram";
}

Options defaults(Program program) {
  Options o;
  o.program = program;
  o.optimizer = "sam";
  if (language(program)) {
    o.lr = 2e-5;
    o.schedule = "poly-warmup";
    o.steps = 50000;
    o.batch_size = program == Program::kGpt2 ? 16 : 32;
    o.max_length = program == Program::kGpt2 ? 1024 : 128;
  } else {
    o.lr = 5e-4;
    o.schedule = "cosine";
    o.epochs = 200;
    o.batch_size = 64;
    o.warmup_steps = 0;
  }
  return o;
}

int64_t Options::resolved_warmup(int64_t total_steps) const {
  if (warmup_steps) return *warmup_steps;
  // The paper's 10,000 warm-up steps of 50,000 (docs/ALGORITHMS.md §10), and
  // the same fifth of a shorter run.
  return std::min<int64_t>(10000, total_steps / 5);
}

void default_to_paper_betas(tram::OptionMap& options) {
  if (!options.count("beta1")) options["beta1"] = kPaperAdamBetas.beta1;
  if (!options.count("beta2")) options["beta2"] = kPaperAdamBetas.beta2;
}

tram::OptionMap Options::optimizer_option_map() const {
  tram::OptionMap map;
  try {
    map = tram::parse_options(optimizer_options);
  } catch (const std::exception& error) {
    throw UsageError(std::string("--optimizer-options: ") + error.what());
  }
  const std::string head = optimizer.substr(0, optimizer.find('+'));
  const auto& bases = tram::base_names();
  const bool plain = std::find(bases.begin(), bases.end(), head) != bases.end();
  if (!plain && !map.count("base")) map["base"] = std::string(language(program) ? "adam" : "sgd");
  const std::string base = plain ? head : std::get<std::string>(map["base"]);
  if (language(program) && base != "sgd") default_to_paper_betas(map);
  if (!map.count("lr")) map["lr"] = lr;
  return map;
}

std::string usage(Program program) {
  const Options d = defaults(program);
  const bool lang = language(program);
  std::ostringstream out;
  out << "usage: " << program_name(program) << " --model DIR --train PATH [--eval NAME=PATH ...] [options]\n\n";
  switch (program) {
    case Program::kVit:
      out << "Fine-tunes a ViTForImageClassification checkpoint. PATH: a directory in MNIST layout\n"
             "({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; --train reads train-*, --eval t10k-*)\n"
             "or a CIFAR-100 binary file (train.bin / test.bin, fine labels). Images are resized to the\n"
             "model's image_size, channels repeated or averaged to num_channels, normalised with mean\n"
             "0.5 / std 0.5 (ViTImageProcessor's defaults). Metrics: loss, accuracy.\n\n";
      break;
    case Program::kGpt2:
      out << "Fine-tunes a GPT-2 checkpoint (causal LM). PATH: a text file or a directory of them (one\n"
             "domain); each file is a document, followed by <|endoftext|>, packed into blocks of\n"
             "--max-length tokens. Metrics per --eval domain: loss (mean token NLL), perplexity.\n\n";
      break;
    case Program::kXlmr:
      out << "Fine-tunes a BERT / RoBERTa / XLM-R encoder for sequence classification. PATH: NLI data\n"
             "(.tsv with a header naming premise/hypothesis/label columns, or .jsonl) read with\n"
             "read_nli, or a two-column text<TAB>label TSV (no header; labels are names or ids).\n"
             "Metrics per --eval set (e.g. one per language): loss, accuracy.\n\n";
      break;
  }
  out << "Model and data:\n"
         "  --model DIR              Hugging Face checkpoint directory (config.json, model.safetensors)\n";
  if (lang) out << "  --tokenizer DIR          tokenizer files (default: --model)\n";
  out << "  --train PATH             training data\n"
         "  --eval NAME=PATH         an evaluation set, reported separately (repeatable)\n"
         "  --limit N                take only the first N examples (blocks) of every set (0: all)\n";
  if (program != Program::kGpt2) out << "  --num-labels N           classifier outputs (default: from the data)\n";
  if (lang) out << "  --max-length N           tokens per " << (program == Program::kGpt2 ? "block" : "example")
                << " (default " << d.max_length << ", at most the model's positions)\n";
  out << "Optimization (defaults: the paper's, " << (lang ? "language" : "vision") << "):\n"
      << "  --optimizer NAME         " << join(tram::method_names()) << ",\n"
      << "                           or METHOD+REGULARIZER (e.g. asam+trpo); default " << d.optimizer << "\n"
      << "  --optimizer-options K=V,...  passed to tram::make_optimizer (e.g. rho=0.05,base=adam);\n"
      << "                           defaults: base=";
  if (lang) out << "adam, beta1=" << kPaperAdamBetas.beta1 << ", beta2=" << kPaperAdamBetas.beta2;
  else out << "sgd";
  out << ", the method's radii (SAM 0.05, ASAM 0.5, ...)\n"
      << "  --lr X                   peak learning rate (default " << d.lr << ")\n"
      << "  --schedule NAME          " << join(schedule_names()) << " (default " << d.schedule << ")\n"
      << "  --warmup-steps N         linear warm-up (default "
      << (lang ? "10000, or a fifth of a shorter run" : "0") << ")\n"
      << "  --steps N | --epochs X   run length (default " << (lang ? "50000 steps" : "200 epochs") << ")\n"
      << "  --batch-size N           global batch, over ranks and micro-batches (default " << d.batch_size << ")\n"
      << "  --eval-batch-size N      (default: --batch-size)\n"
      << "  --grad-accum N           micro-batches per step (default 1)\n"
      << "  --max-grad-norm X        clip the descent gradient (default: off)\n"
      << "  --seed N                 (default 0)\n"
      << "  --device cpu|cuda        (default cpu)\n"
      << "  --dtype float32|float64  (default float32)\n"
      << "Output and runs:\n"
         "  --out DIR                metrics.csv, summary.json, checkpoint/, state/ (default tram-run)\n"
         "  --eval-every N           evaluate every N steps (default: before and after training)\n"
         "  --save-every N           write the resumable state every N steps (default: at the end)\n"
         "  --resume                 continue from DIR/state/ (bit-identical to an uninterrupted run)\n"
         "  --stop-after N           stop after N steps, leaving a resumable state\n"
         "  --quiet                  no progress output\n"
         "Data parallel (one process per rank; only rank 0 writes):\n"
         "  --world-size W --rank R --rendezvous file:///PATH|tcp://HOST:PORT|env://\n"
         "                           env:// (the default when RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT\n"
         "                           are set, as torchrun sets them) reads rank and world size from there,\n"
         "                           and LOCAL_RANK picks the CUDA device:\n"
         "                           torchrun --no-python --nproc-per-node 2 PROGRAM ...\n"
         "  --collective-timeout S   a collective that waits longer for the other ranks fails the run,\n"
         "                           naming it (default 300)\n"
         "  --help\n";
  return out.str();
}

namespace {
// torchrun's environment: with --rendezvous env://, or by default when all
// four variables are set and no rendezvous was given, rank and world size come
// from RANK and WORLD_SIZE (a flag given as well must agree) and the CUDA
// device from LOCAL_RANK.
void apply_launcher_environment(Options& o, bool world_given, bool rank_given) {
  auto variable = [](const char* name) -> std::optional<std::string> {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') return std::nullopt;
    return std::string(value);
  };
  const bool launched = variable("RANK") && variable("WORLD_SIZE") && variable("MASTER_ADDR") && variable("MASTER_PORT");
  if (o.rendezvous.empty() && launched && !world_given && !rank_given) o.rendezvous = "env://";
  if (o.rendezvous != "env://") return;
  auto number = [&](const char* name, int minimum) {
    const auto value = variable(name);
    if (!value) throw UsageError(std::string("--rendezvous env:// needs the environment variable ") + name +
                                 " (torchrun sets it)");
    return static_cast<int>(to_integer(name, *value, minimum));
  };
  const int world = number("WORLD_SIZE", 1), rank = number("RANK", 0);
  if (world_given && o.world_size != world) {
    throw UsageError("--world-size " + std::to_string(o.world_size) + " disagrees with WORLD_SIZE=" +
                     std::to_string(world));
  }
  if (rank_given && o.rank != rank) {
    throw UsageError("--rank " + std::to_string(o.rank) + " disagrees with RANK=" + std::to_string(rank));
  }
  o.world_size = world;
  o.rank = rank;
  if (variable("LOCAL_RANK")) o.local_rank = number("LOCAL_RANK", 0);
}
}  // namespace

Options parse_command_line(Program program, const std::vector<std::string>& arguments) {
  Options o = defaults(program);
  bool steps_given = false, epochs_given = false, world_given = false, rank_given = false;
  using Setter = std::function<void(const std::string&)>;
  std::map<std::string, Setter> with_value = {
      {"--model", [&](const std::string& v) { o.model = v; }},
      {"--tokenizer", [&](const std::string& v) { o.tokenizer = v; }},
      {"--optimizer", [&](const std::string& v) { check_method(v); o.optimizer = v; }},
      {"--optimizer-options", [&](const std::string& v) { o.optimizer_options = v; }},
      {"--lr", [&](const std::string& v) { o.lr = to_number("--lr", v); }},
      {"--schedule", [&](const std::string& v) { check_choice("--schedule", v, schedule_names()); o.schedule = v; }},
      {"--warmup-steps", [&](const std::string& v) { o.warmup_steps = to_integer("--warmup-steps", v, 0); }},
      {"--steps", [&](const std::string& v) { o.steps = to_integer("--steps", v, 1); steps_given = true; }},
      {"--epochs", [&](const std::string& v) { o.epochs = to_number("--epochs", v); epochs_given = true; }},
      {"--batch-size", [&](const std::string& v) { o.batch_size = to_integer("--batch-size", v, 1); }},
      {"--eval-batch-size", [&](const std::string& v) { o.eval_batch_size = to_integer("--eval-batch-size", v, 1); }},
      {"--grad-accum", [&](const std::string& v) { o.grad_accum = to_integer("--grad-accum", v, 1); }},
      {"--max-grad-norm", [&](const std::string& v) { o.max_grad_norm = to_number("--max-grad-norm", v); }},
      {"--seed", [&](const std::string& v) { o.seed = static_cast<uint64_t>(to_integer("--seed", v, 0)); }},
      {"--device", [&](const std::string& v) { check_choice("--device", v, {"cpu", "cuda"}); o.device = v; }},
      {"--dtype", [&](const std::string& v) { check_choice("--dtype", v, {"float32", "float64"}); o.dtype = v; }},
      {"--train", [&](const std::string& v) { o.train = v; }},
      {"--eval",
       [&](const std::string& v) {
         const auto eq = v.find('=');
         if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) {
           throw UsageError("--eval: expected NAME=PATH, got '" + v + "'");
         }
         const std::string name = v.substr(0, eq);
         for (const auto& [existing, path] : o.eval) {
           if (existing == name) throw UsageError("--eval: the name '" + name + "' is given twice");
         }
         o.eval.emplace_back(name, v.substr(eq + 1));
       }},
      {"--out", [&](const std::string& v) { o.out = v; }},
      {"--eval-every", [&](const std::string& v) { o.eval_every = to_integer("--eval-every", v, 0); }},
      {"--save-every", [&](const std::string& v) { o.save_every = to_integer("--save-every", v, 0); }},
      {"--stop-after", [&](const std::string& v) { o.stop_after = to_integer("--stop-after", v, 1); }},
      {"--num-labels", [&](const std::string& v) { o.num_labels = to_integer("--num-labels", v, 1); }},
      {"--limit", [&](const std::string& v) { o.limit = to_integer("--limit", v, 0); }},
      {"--max-length", [&](const std::string& v) { o.max_length = to_integer("--max-length", v, 2); }},
      {"--world-size",
       [&](const std::string& v) {
         o.world_size = static_cast<int>(to_integer("--world-size", v, 1));
         world_given = true;
       }},
      {"--rank",
       [&](const std::string& v) {
         o.rank = static_cast<int>(to_integer("--rank", v, 0));
         rank_given = true;
       }},
      {"--rendezvous", [&](const std::string& v) { o.rendezvous = v; }},
      {"--collective-timeout", [&](const std::string& v) { o.collective_timeout = to_integer("--collective-timeout", v, 1); }},
  };
  std::map<std::string, std::function<void()>> switches = {
      {"--help", [&] { o.help = true; }},
      {"-h", [&] { o.help = true; }},
      {"--resume", [&] { o.resume = true; }},
      {"--quiet", [&] { o.quiet = true; }},
  };
  for (size_t i = 0; i < arguments.size(); ++i) {
    std::string flag = arguments[i], value;
    bool inline_value = false;
    if (const auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      inline_value = true;
    }
    if (auto it = switches.find(flag); it != switches.end() && !inline_value) {
      it->second();
      continue;
    }
    auto it = with_value.find(flag);
    if (it == with_value.end()) {
      std::vector<std::string> valid;
      for (const auto& [name, setter] : with_value) valid.push_back(name);
      for (const auto& [name, setter] : switches) valid.push_back(name);
      std::sort(valid.begin(), valid.end());
      throw UsageError("unknown argument '" + arguments[i] + "'; valid flags: " + join(valid));
    }
    if (!inline_value) {
      if (i + 1 >= arguments.size()) throw UsageError(flag + ": missing value");
      value = arguments[++i];
    }
    it->second(value);
  }
  if (o.help) return o;
  if (steps_given && epochs_given) throw UsageError("--steps and --epochs: give one, not both");
  if (steps_given) o.epochs = 0;
  if (epochs_given) o.steps = 0;
  if (o.model.empty()) throw UsageError("--model DIR is required");
  if (o.train.empty()) throw UsageError("--train PATH is required");
  if (o.tokenizer.empty()) o.tokenizer = o.model;
  apply_launcher_environment(o, world_given, rank_given);
  if (o.rank >= o.world_size) {
    throw UsageError("--rank must be < --world-size (" + std::to_string(o.world_size) + "), got " +
                     std::to_string(o.rank));
  }
  if (o.world_size > 1 && o.rendezvous.empty()) throw UsageError("--world-size > 1 needs --rendezvous");
  if (o.batch_size % (int64_t{o.world_size} * o.grad_accum) != 0) {
    throw UsageError("--batch-size (" + std::to_string(o.batch_size) + ") must be a multiple of --world-size x "
                     "--grad-accum (" + std::to_string(int64_t{o.world_size} * o.grad_accum) + ")");
  }
  if (o.eval_batch_size == 0) o.eval_batch_size = o.batch_size;
  o.optimizer_option_map();  // rejects malformed --optimizer-options now
  return o;
}

Options parse_command_line(Program program, int argc, char** argv) {
  return parse_command_line(program, std::vector<std::string>(argv + 1, argv + argc));
}

int report_failure(Program program, const std::exception& error) {
  std::string what = error.what();
  // LibTorch's messages carry a C++ backtrace after the first line.
  if (const auto cut = what.find("\nException raised from"); cut != std::string::npos) what.resize(cut);
  std::cerr << program_name(program) << ": error: " << what << "\n";
  if (dynamic_cast<const UsageError*>(&error)) {
    std::cerr << "(see " << program_name(program) << " --help)\n";
    return 2;
  }
  return 1;
}

}  // namespace tram::hf::training
