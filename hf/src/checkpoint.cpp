#include <tram/hf/checkpoint.h>

#include <tram/hf/data/text_labels.h>  // kMaxLabels

#include <torch/nn/module.h>
#include <torch/utils.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

namespace tram::hf {
namespace fs = std::filesystem;

namespace {

std::string shape_string(c10::IntArrayRef shape) {
  std::ostringstream out;
  out << shape;
  return out.str();
}

std::string shape_string(const std::vector<int64_t>& shape) { return shape_string(c10::IntArrayRef(shape)); }

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

nlohmann::json read_json_file(const fs::path& file, const std::string& what) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot open " + what + " '" + file.string() + "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& error) {
    throw std::runtime_error(what + " '" + file.string() + "' is not valid JSON: " + error.what());
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// HfConfig
// ---------------------------------------------------------------------------

HfConfig HfConfig::load(const fs::path& path) {
  const fs::path file = fs::is_directory(path) ? path / kConfigFile : path;
  nlohmann::json json = read_json_file(file, "model config");
  if (!json.is_object()) throw std::runtime_error("model config '" + file.string() + "' is not a JSON object");
  return HfConfig(json, file.string());
}

HfConfig::HfConfig(const nlohmann::json& json, std::string origin)
    : json_(std::make_shared<const nlohmann::json>(json)), origin_(std::move(origin)) {}

void HfConfig::fail(const std::string& field, const std::string& what) const {
  throw std::runtime_error("model config '" + origin_ + "': field \"" + field + "\" " + what);
}

const nlohmann::json* HfConfig::find(const std::string& field) const {
  auto found = json_->find(field);
  if (found == json_->end() || found->is_null()) return nullptr;
  return &*found;
}

bool HfConfig::has(const std::string& field) const { return find(field) != nullptr; }

int64_t HfConfig::integer(const std::string& field) const {
  const nlohmann::json* value = find(field);
  if (value == nullptr) fail(field, "is required");
  if (!value->is_number_integer()) fail(field, "must be an integer, got " + value->dump());
  return value->get<int64_t>();
}

int64_t HfConfig::integer(const std::string& field, int64_t fallback) const {
  return has(field) ? integer(field) : fallback;
}

double HfConfig::number(const std::string& field, double fallback) const {
  const nlohmann::json* value = find(field);
  if (value == nullptr) return fallback;
  if (!value->is_number()) fail(field, "must be a number, got " + value->dump());
  return value->get<double>();
}

bool HfConfig::boolean(const std::string& field, bool fallback) const {
  const nlohmann::json* value = find(field);
  if (value == nullptr) return fallback;
  if (!value->is_boolean()) fail(field, "must be true or false, got " + value->dump());
  return value->get<bool>();
}

std::string HfConfig::string(const std::string& field, const std::string& fallback) const {
  const nlohmann::json* value = find(field);
  if (value == nullptr) return fallback;
  if (!value->is_string()) fail(field, "must be a string, got " + value->dump());
  return value->get<std::string>();
}

std::pair<int64_t, int64_t> HfConfig::size_pair(const std::string& field, int64_t fallback) const {
  const nlohmann::json* value = find(field);
  if (value == nullptr) return {fallback, fallback};
  if (value->is_number_integer()) return {value->get<int64_t>(), value->get<int64_t>()};
  if (value->is_array() && value->size() == 2 && (*value)[0].is_number_integer() && (*value)[1].is_number_integer()) {
    return {(*value)[0].get<int64_t>(), (*value)[1].get<int64_t>()};
  }
  fail(field, "must be an integer or [height, width], got " + value->dump());
}

int64_t HfConfig::num_labels() const {
  constexpr int64_t kHuggingFaceDefaultLabels = 2;
  if (has("num_labels")) {
    const int64_t count = integer("num_labels");
    // A classifier head of count rows, and with_num_labels() writes count
    // names: a corrupt count must not allocate (or loop) by it.
    if (count <= 0 || count >= data::kMaxLabels) {
      fail("num_labels", "is " + std::to_string(count) + "; expected 1.." + std::to_string(data::kMaxLabels - 1));
    }
    return count;
  }
  if (const nlohmann::json* labels = find("id2label")) {
    if (!labels->is_object()) fail("id2label", "must be an object {\"0\": \"name\", ...}");
    return int64_t(labels->size());
  }
  return kHuggingFaceDefaultLabels;
}

HfConfig HfConfig::with_num_labels(int64_t num_labels) const {
  if (num_labels <= 0 || num_labels >= data::kMaxLabels) {
    throw std::invalid_argument("num_labels must be in 1.." + std::to_string(data::kMaxLabels - 1) + ", got " +
                                std::to_string(num_labels) + " (for " + origin_ + ")");
  }
  nlohmann::json json = *json_;
  json.erase("num_labels");
  const nlohmann::json* labels = find("id2label");
  if (labels == nullptr || !labels->is_object() || int64_t(labels->size()) != num_labels) {
    nlohmann::json id2label = nlohmann::json::object();
    nlohmann::json label2id = nlohmann::json::object();
    for (int64_t i = 0; i < num_labels; ++i) {
      const std::string name = "LABEL_" + std::to_string(i);
      id2label[std::to_string(i)] = name;
      label2id[name] = i;
    }
    json["id2label"] = id2label;
    json["label2id"] = label2id;
  }
  return HfConfig(json, origin_ + " (num_labels=" + std::to_string(num_labels) + ")");
}

void HfConfig::expect_model_type(const std::vector<std::string>& expected) const {
  if (!has("model_type")) return;
  const std::string type = string("model_type", "");
  if (std::find(expected.begin(), expected.end(), type) != expected.end()) return;
  std::string names;
  for (const auto& name : expected) names += (names.empty() ? "'" : ", '") + name + "'";
  fail("model_type", "is '" + type + "', but this model reads " + names + " checkpoints");
}

void HfConfig::save(const fs::path& file) const {
  std::ofstream out(file);
  out << json_->dump(2) << '\n';
  out.close();
  if (!out) throw std::runtime_error("cannot write model config '" + file.string() + "'");
}

// ---------------------------------------------------------------------------
// CheckpointReader
// ---------------------------------------------------------------------------

CheckpointReader::CheckpointReader(const fs::path& path) {
  fs::path weights = path;
  if (fs::is_directory(path)) {
    if (fs::exists(path / kShardIndexFile)) {
      weights = path / kShardIndexFile;
    } else if (fs::exists(path / kWeightsFile)) {
      weights = path / kWeightsFile;
    } else if (fs::exists(path / "pytorch_model.bin") || fs::exists(path / "pytorch_model.bin.index.json")) {
      throw std::runtime_error(
          "checkpoint directory '" + path.string() +
          "' has only PyTorch pickle weights (pytorch_model.bin), which this C++ code does not read; convert them "
          "once with: python -c \"from transformers import AutoModel; AutoModel.from_pretrained('" +
          path.string() + "').save_pretrained('" + path.string() + "')\" (writes model.safetensors)");
    } else {
      throw std::runtime_error("checkpoint directory '" + path.string() + "' has neither " + kWeightsFile + " nor " +
                               kShardIndexFile);
    }
  } else if (!fs::exists(path)) {
    throw std::runtime_error("checkpoint '" + path.string() + "' does not exist");
  }

  if (ends_with(weights.string(), ".index.json")) {
    description_ = weights.string();
    const nlohmann::json index = read_json_file(weights, "checkpoint index");
    auto weight_map = index.find("weight_map");
    if (!index.is_object() || weight_map == index.end() || !weight_map->is_object()) {
      throw std::runtime_error("checkpoint index '" + weights.string() +
                               "' has no \"weight_map\" object {tensor name: shard file}");
    }
    std::map<std::string, size_t> shard_index;
    for (const auto& [key, shard] : weight_map->items()) {
      if (!shard.is_string()) {
        throw std::runtime_error("checkpoint index '" + weights.string() + "': weight_map entry '" + key +
                                 "' is not a file name");
      }
      const std::string shard_name = shard.get<std::string>();
      auto known = shard_index.find(shard_name);
      if (known == shard_index.end()) {
        const fs::path shard_path = weights.parent_path() / shard_name;
        if (!fs::exists(shard_path)) {
          throw std::runtime_error("checkpoint index '" + weights.string() + "' names shard '" + shard_name +
                                   "' (for tensor '" + key + "'), which does not exist");
        }
        files_.push_back(std::make_unique<safetensors::File>(shard_path.string()));
        known = shard_index.emplace(shard_name, files_.size() - 1).first;
      }
      const safetensors::File& file = *files_[known->second];
      if (!file.contains(key)) {
        throw std::runtime_error("checkpoint index '" + weights.string() + "' places tensor '" + key + "' in '" +
                                 file.path() + "', which has no such tensor");
      }
      owner_[key] = known->second;
    }
  } else {
    files_.push_back(std::make_unique<safetensors::File>(weights.string()));
    description_ = weights.string();
    for (const auto& name : files_.front()->names()) owner_[name] = 0;
  }
  for (const auto& [key, file] : owner_) keys_.push_back(key);
}

const safetensors::TensorInfo& CheckpointReader::info(const std::string& key) const {
  return files_[owner_.at(key)]->info(key);
}

const std::string& CheckpointReader::file_of(const std::string& key) const { return files_[owner_.at(key)]->path(); }

torch::Tensor CheckpointReader::read(const std::string& key) const {
  auto found = owner_.find(key);
  if (found == owner_.end()) throw std::runtime_error("checkpoint '" + description_ + "' has no tensor '" + key + "'");
  return files_[found->second]->tensor(key);
}

// ---------------------------------------------------------------------------
// Key normalisation
// ---------------------------------------------------------------------------

KeyMapping map_checkpoint_keys(const std::vector<std::string>& checkpoint_keys,
                               const std::vector<std::string>& model_keys, const KeyScheme& scheme) {
  const std::set<std::string> model(model_keys.begin(), model_keys.end());
  KeyMapping mapping;
  auto claim = [&](const std::string& model_key, const std::string& checkpoint_key) {
    auto [it, inserted] = mapping.source.emplace(model_key, checkpoint_key);
    if (!inserted) {
      throw std::runtime_error("checkpoint keys '" + it->second + "' and '" + checkpoint_key +
                               "' both fill parameter '" + model_key + "' (a checkpoint with and without the '" +
                               scheme.base_prefix + "' prefix?); remove one of them");
    }
  };
  // Rule 1: TF-era LayerNorm names.
  auto modern = [](const std::string& key) {
    static const std::pair<std::string, std::string> kLegacySuffixes[] = {{".gamma", ".weight"}, {".beta", ".bias"}};
    for (const auto& [legacy, current] : kLegacySuffixes) {
      if (ends_with(key, legacy)) return key.substr(0, key.size() - legacy.size()) + current;
    }
    return key;
  };
  auto with_prefix = [&](const std::string& key) {
    return starts_with(key, scheme.base_prefix) ? key : scheme.base_prefix + key;
  };

  // Rule 2 for every key first, so that a tied duplicate (rule 3) knows
  // whether its target is already filled.
  std::vector<std::string> unmatched;
  for (const auto& original : checkpoint_keys) {
    const std::string key = modern(original);
    if (model.count(key)) {
      claim(key, original);
    } else if (!scheme.base_prefix.empty() && !starts_with(key, scheme.base_prefix) &&
               model.count(scheme.base_prefix + key)) {
      claim(scheme.base_prefix + key, original);
    } else {
      unmatched.push_back(original);
    }
  }
  for (const auto& original : unmatched) {
    const std::string key = modern(original);
    auto tied = scheme.tied.find(key);
    if (tied == scheme.tied.end()) tied = scheme.tied.find(with_prefix(key));
    if (tied != scheme.tied.end() && model.count(tied->second)) {
      if (mapping.source.count(tied->second)) {
        mapping.ignored.emplace_back(original, "tied to " + tied->second + ", which is loaded once");
      } else {
        claim(tied->second, original);
      }
      continue;
    }
    auto unused = std::find_if(scheme.unused.begin(), scheme.unused.end(),
                               [&](const auto& rule) { return std::regex_search(key, std::regex(rule.first)); });
    if (unused != scheme.unused.end()) {
      mapping.ignored.emplace_back(original, unused->second);
    } else {
      mapping.unexpected.push_back(original);
    }
  }
  return mapping;
}

// ---------------------------------------------------------------------------
// Loading and saving
// ---------------------------------------------------------------------------

std::string LoadReport::summary() const {
  std::ostringstream out;
  out << "checkpoint " << source << ": loaded " << loaded.size() << " tensors into " << model;
  if (!converted.empty()) out << " (" << converted.size() << " converted, e.g. " << converted.front() << ")";
  out << '\n';
  auto list = [&](const char* title, const std::vector<std::string>& names) {
    if (names.empty()) return;
    out << "  " << title << " (" << names.size() << "):\n";
    for (const auto& name : names) out << "    " << name << '\n';
  };
  if (!new_head.empty()) {
    out << "  new head, initialised as Hugging Face does (weights normal(0, " << initializer_range
        << "), biases 0): train it before use\n";
    for (const auto& name : new_head) out << "    " << name << '\n';
  }
  list("MISSING from the checkpoint, left at their random initialisation", missing);
  list("UNEXPECTED in the checkpoint, not loaded", unexpected);
  list("ignored on purpose", ignored);
  return out.str();
}

LoadReport load_checkpoint(torch::nn::Module& model, const fs::path& path, const KeyScheme& scheme) {
  const CheckpointReader reader(path);
  std::map<std::string, torch::Tensor> targets;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) targets.emplace(item.key(), item.value());
  for (const auto& item : model.named_buffers(/*recurse=*/true)) targets.emplace(item.key(), item.value());
  std::vector<std::string> model_keys;
  for (const auto& [key, tensor] : targets) model_keys.push_back(key);

  const KeyMapping mapping = map_checkpoint_keys(reader.keys(), model_keys, scheme);
  LoadReport report;
  report.source = reader.description();
  report.model = model.name();
  report.unexpected = mapping.unexpected;
  report.initializer_range = scheme.initializer_range;
  for (const auto& [key, reason] : mapping.ignored) report.ignored.push_back(key + " (" + reason + ")");

  auto in_head = [&](const std::string& key) {
    return std::any_of(scheme.head_prefixes.begin(), scheme.head_prefixes.end(),
                       [&](const std::string& prefix) { return starts_with(key, prefix); });
  };
  // A fresh head parameter, as Hugging Face's _init_weights makes it.
  auto initialise_head = [&](torch::Tensor& parameter) {
    if (parameter.dim() >= 2) {
      parameter.normal_(0.0, scheme.initializer_range);
    } else {
      parameter.zero_();
    }
  };

  torch::NoGradGuard no_grad;
  for (auto& [key, target] : targets) {
    auto source = mapping.source.find(key);
    if (source == mapping.source.end()) {
      if (in_head(key)) {
        initialise_head(target);
        report.new_head.push_back(key + " " + shape_string(target.sizes()) + " (not in the checkpoint)");
      } else {
        report.missing.push_back(key);
      }
      continue;
    }
    const std::string& checkpoint_key = source->second;
    const safetensors::TensorInfo& info = reader.info(checkpoint_key);
    if (c10::IntArrayRef(info.shape) != target.sizes()) {
      if (in_head(key)) {
        initialise_head(target);
        report.new_head.push_back(key + " " + shape_string(target.sizes()) + " (checkpoint has " +
                                  shape_string(info.shape) + ")");
        continue;
      }
      throw std::runtime_error("checkpoint tensor '" + checkpoint_key + "' in '" + reader.file_of(checkpoint_key) +
                               "' has shape " + shape_string(info.shape) + ", but parameter '" + key + "' of " +
                               report.model + " has shape " + shape_string(target.sizes()) +
                               "; the config.json does not describe this checkpoint");
    }
    torch::Tensor value = reader.read(checkpoint_key);
    if (value.scalar_type() != target.scalar_type()) {
      report.converted.push_back(key + ": " + info.dtype + " -> " + c10::toString(target.scalar_type()));
    }
    target.copy_(value);
    report.loaded.push_back(key);
  }
  return report;
}

void save_pretrained(const torch::nn::Module& model, const HfConfig& config, const fs::path& directory) {
  fs::create_directories(directory);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) tensors.emplace(item.key(), item.value());
  for (const auto& item : model.named_buffers(/*recurse=*/true)) tensors.emplace(item.key(), item.value());
  safetensors::save((directory / kWeightsFile).string(), tensors, {{"format", "pt"}});

  // Hugging Face loads weights in the config's dtype ("dtype", formerly
  // "torch_dtype"): record the dtype the weights were saved in.
  nlohmann::json json = config.json();
  auto floating =
      std::find_if(tensors.begin(), tensors.end(), [](const auto& item) { return item.second.is_floating_point(); });
  if (floating != tensors.end()) {
    const std::string dtype = floating->second.scalar_type() == torch::kFloat64    ? "float64"
                              : floating->second.scalar_type() == torch::kFloat16  ? "float16"
                              : floating->second.scalar_type() == torch::kBFloat16 ? "bfloat16"
                                                                                   : "float32";
    json["dtype"] = dtype;
    if (json.contains("torch_dtype")) json["torch_dtype"] = dtype;
  }
  HfConfig(json, config.origin()).save(directory / kConfigFile);
}

}  // namespace tram::hf
