#include "study.h"

#include <tram/hf/atomic_file.h>
#include <tram/hf/training/cli.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <stdexcept>

namespace tram::study {

namespace fs = std::filesystem;

double RunRecord::metric(const std::string& name) const {
  for (const auto& [column, value] : metrics) {
    if (column == name) return value;
  }
  throw std::runtime_error("run " + experiment + "/" + method + "/seed " + std::to_string(seed) + " has no metric '" +
                           name + "'");
}

void save_record(const RunRecord& record, const fs::path& file) {
  nlohmann::ordered_json json;
  json["experiment"] = record.experiment;
  json["method"] = record.method;
  json["seed"] = record.seed;
  json["metrics"] = nlohmann::ordered_json::array();
  for (const auto& [name, value] : record.metrics) json["metrics"].push_back({name, value});
  json["analysis"] = record.analysis;
  json["train_loss"] = record.train_loss;
  json["seconds"] = record.seconds;
  json["fingerprint"] = record.fingerprint;
  fs::create_directories(file.parent_path());
  // Atomically: an interrupted study never leaves a half record that would
  // later read as finished.
  hf::write_text_atomically(file, json.dump(2) + "\n");
}

bool load_record(const fs::path& file, RunRecord& record) {
  std::ifstream in(file);
  if (!in) return false;
  try {
    const auto json = nlohmann::json::parse(in);
    record.experiment = json.at("experiment").get<std::string>();
    record.method = json.at("method").get<std::string>();
    record.seed = json.at("seed").get<int64_t>();
    record.metrics.clear();
    for (const auto& pair : json.at("metrics")) {
      record.metrics.emplace_back(pair.at(0).get<std::string>(), pair.at(1).get<double>());
    }
    record.analysis = json.at("analysis").get<std::map<std::string, double>>();
    record.train_loss = json.at("train_loss").get<double>();
    record.seconds = json.at("seconds").get<double>();
    record.fingerprint = json.at("fingerprint").get<std::string>();
    return true;
  } catch (const std::exception&) {
    return false;  // unreadable: recompute
  }
}

std::unique_ptr<SharpnessAware> make_study_optimizer(const std::string& method_spec, torch::nn::Module& model,
                                                     double lr) {
  const size_t colon = method_spec.find(':');
  const std::string method = method_spec.substr(0, colon);
  // The method's own options first: the study's defaults fill only what they leave out.
  // Options after ':' are separated by ';' (commas separate the methods of --methods).
  std::string own = colon == std::string::npos ? "" : method_spec.substr(colon + 1);
  std::replace(own.begin(), own.end(), ';', ',');
  OptionMap options = parse_options(own);
  const auto& bases = base_names();
  // A plain base name is the optimizer itself; anything else wraps Adam.
  if (std::find(bases.begin(), bases.end(), method) == bases.end() && !options.count("base")) {
    options["base"] = std::string("adam");
  }
  if (!options.count("lr")) options["lr"] = lr;
  if (method != "sgd") hf::training::default_to_paper_betas(options);  // Adam or AdamW, itself or as the base
  auto optimizer = make_optimizer(method, model.parameters(), options);
  optimizer->set_module(model.shared_from_this());
  return optimizer;
}

hf::training::LoopSummary train(SharpnessAware& optimizer, const hf::training::Schedule& schedule,
                                const std::function<ForwardClosure(int64_t)>& batch, int64_t items_per_step,
                                const std::string& label, const std::string& unit) {
  hf::training::Progress progress(label, schedule.total_steps, unit);
  hf::training::StepHooks hooks;
  hooks.batch = batch;
  hooks.items_per_step = items_per_step;
  hooks.after_step = [&](int64_t step, const StepReport& report, double) {
    if (!std::isfinite(report.loss)) {
      throw std::runtime_error(label + ": the loss is " + std::to_string(report.loss) + " at step " +
                               std::to_string(step) + "; lower the learning rate");
    }
  };
  const auto summary = hf::training::run_steps(optimizer, schedule, 0, schedule.total_steps, hooks, progress);
  std::ostringstream done;
  done << "final loss " << std::fixed << std::setprecision(4) << summary.tail_loss;
  progress.finish(done.str());
  return summary;
}

torch::Tensor EpochBatches::rows_of(int64_t step) {
  const int64_t start = (step * batch_) % rows_;
  if (start < batch_) order_ = torch::randperm(rows_);  // a new epoch
  return order_.slice(0, start, std::min(rows_, start + batch_));
}

RunRecord new_record(const std::string& experiment, const std::string& method, int64_t seed,
                     const hf::training::LoopSummary& summary) {
  RunRecord record;
  record.experiment = experiment;
  record.method = method;
  record.seed = seed;
  record.train_loss = summary.tail_loss;
  record.analysis["radius"] = summary.mean_radius;
  record.analysis["d"] = summary.mean_distance;
  record.analysis["passes"] = summary.mean_passes;
  return record;
}

std::string with_thread_count(const std::string& fingerprint) {
  return fingerprint + " threads=" + std::to_string(torch::get_num_threads());
}

bool cached_checkpoint_matches(const fs::path& directory, const std::string& stamp) {
  std::ifstream in(directory / "study-stamp.txt");
  if (!in) return false;
  std::stringstream text;
  text << in.rdbuf();
  return text.str() == with_thread_count(stamp) && fs::exists(directory / "model.safetensors") && fs::exists(directory / "config.json");
}

void stamp_checkpoint(const fs::path& directory, const std::string& stamp) {
  std::ofstream out(directory / "study-stamp.txt");
  out << with_thread_count(stamp);
  if (!out) throw std::runtime_error("cannot write " + (directory / "study-stamp.txt").string());
}

void seed_everything(uint64_t seed) { torch::manual_seed(seed); }

}  // namespace tram::study
