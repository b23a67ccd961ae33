// Hugging Face checkpoints: config.json, model.safetensors (single or sharded
// with model.safetensors.index.json), and loading them into modules whose
// parameter names are Hugging Face's.
//
// A program loads a model with one call (see models/*.h: load_vit,
// load_gpt2, load_sequence_classifier); this header is the machinery under
// it, usable for any module whose named_parameters() are the checkpoint keys.
#pragma once

#include <tram/hf/safetensors.h>

#include <torch/types.h>
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}

namespace tram::hf {

// ---------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------

// Read access to a config.json with Hugging Face's conventions: a field that
// is absent or null takes the model's default (the caller passes it); a field
// of the wrong type is an error naming the file and the field.
class HfConfig {
 public:
  // `path` is a config.json or a directory holding one.
  static HfConfig load(const std::filesystem::path& path);
  HfConfig(const nlohmann::json& json, std::string origin);

  const std::string& origin() const { return origin_; }  // the file, for messages
  const nlohmann::json& json() const { return *json_; }

  bool has(const std::string& field) const;         // present and not null
  int64_t integer(const std::string& field) const;  // required
  int64_t integer(const std::string& field, int64_t fallback) const;
  double number(const std::string& field, double fallback) const;
  bool boolean(const std::string& field, bool fallback) const;
  std::string string(const std::string& field, const std::string& fallback) const;
  // An int or a [height, width] pair (ViT's image_size and patch_size).
  std::pair<int64_t, int64_t> size_pair(const std::string& field, int64_t fallback) const;

  // "num_labels" if present, else the size of "id2label" (what save_pretrained
  // writes), else 2 (Hugging Face's default).
  int64_t num_labels() const;
  // A copy with num_labels replaced: id2label/label2id become LABEL_0..LABEL_{n-1}
  // unless they already have n entries.
  HfConfig with_num_labels(int64_t num_labels) const;
  // Checks "model_type" is one of `expected` (when the field is present).
  void expect_model_type(const std::vector<std::string>& expected) const;

  void save(const std::filesystem::path& file) const;

 private:
  std::shared_ptr<const nlohmann::json> json_;
  std::string origin_;
  [[noreturn]] void fail(const std::string& field, const std::string& what) const;
  const nlohmann::json* find(const std::string& field) const;
};

// ---------------------------------------------------------------------------
// Reading checkpoint tensors
// ---------------------------------------------------------------------------

// The tensors of a checkpoint, read one at a time. `path` is one of
//  - a directory with model.safetensors.index.json (sharded) or model.safetensors;
//  - a .safetensors file;
//  - a .safetensors.index.json file, whose "weight_map" names the shard of
//    every tensor (shard paths relative to the index).
// Directories with only PyTorch pickles (pytorch_model.bin) are rejected with
// the command that converts them.
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::filesystem::path& path);

  const std::string& description() const { return description_; }  // the path(s), for messages
  const std::vector<std::string>& keys() const { return keys_; }   // sorted
  bool contains(const std::string& key) const { return owner_.count(key) != 0; }
  const safetensors::TensorInfo& info(const std::string& key) const;
  const std::string& file_of(const std::string& key) const;
  torch::Tensor read(const std::string& key) const;  // CPU, in the file's dtype

 private:
  std::string description_;
  std::vector<std::unique_ptr<safetensors::File>> files_;
  std::map<std::string, size_t> owner_;  // key -> index into files_
  std::vector<std::string> keys_;
};

// ---------------------------------------------------------------------------
// Checkpoint keys -> model parameter names
// ---------------------------------------------------------------------------

// How one model family's checkpoint keys relate to its parameter names.
struct KeyScheme {
  // The task model's base-model attribute with its dot ("vit.", "transformer.",
  // "bert.", "roberta."): checkpoints of the bare base model (ViTModel,
  // GPT2Model, XLMRobertaModel, ...) store keys without it.
  std::string base_prefix;
  // Parameters of the task head ("classifier."). A head parameter absent from
  // the checkpoint, or of another shape (another num_labels), is initialised
  // fresh as Hugging Face does (weights normal(0, initializer_range), biases
  // zero) and reported; elsewhere a shape difference is an error.
  std::vector<std::string> head_prefixes;
  double initializer_range = 0.02;
  // Checkpoint keys that duplicate a model parameter through weight tying:
  // {"lm_head.weight", "transformer.wte.weight"}. Loaded once: the duplicate
  // is used only when the checkpoint lacks the parameter itself.
  std::map<std::string, std::string> tied;
  // Checkpoint keys this model does not use on purpose (non-persistent
  // buffers older versions saved, pre-training heads, an unused pooler):
  // ECMAScript regexes searched in the key, with the reason reported.
  std::vector<std::pair<std::string, std::string>> unused;
};

// The result of matching checkpoint keys to model keys.
struct KeyMapping {
  std::map<std::string, std::string> source;                 // model key -> checkpoint key that fills it
  std::vector<std::string> unexpected;                       // checkpoint keys with no place in the model
  std::vector<std::pair<std::string, std::string>> ignored;  // checkpoint key, why it is skipped
};

// THE normalisation of checkpoint keys (the only place key names are
// rewritten). For each checkpoint key, in order:
//  1. TF-era LayerNorm names: a trailing ".gamma"/".beta" reads as ".weight"/".bias".
//  2. The key itself if the model has it; else base_prefix + key if the model
//     has that (a base-model checkpoint saved without the prefix).
//  3. Otherwise a tied duplicate (scheme.tied, with or without the prefix)
//     fills its target when no other key does; else it is ignored.
//  4. Otherwise a key matching scheme.unused is ignored with its reason.
//  5. Otherwise it is unexpected.
// Two checkpoint keys that would fill the same parameter (the checkpoint has
// both "wte.weight" and "transformer.wte.weight") are an error.
KeyMapping map_checkpoint_keys(const std::vector<std::string>& checkpoint_keys,
                               const std::vector<std::string>& model_keys, const KeyScheme& scheme);

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

// What a load did. Names are model parameter names unless stated.
struct LoadReport {
  std::string source;                   // the checkpoint path(s)
  std::string model;                    // model class, for the summary
  std::vector<std::string> loaded;      // filled from the checkpoint
  std::vector<std::string> converted;   // of `loaded`, "name: F16 -> Float" where the dtype changed
  std::vector<std::string> missing;     // not in the checkpoint, left at their initialisation
  std::vector<std::string> new_head;    // head parameters initialised fresh, with the reason
  std::vector<std::string> unexpected;  // checkpoint keys the model has no place for
  std::vector<std::string> ignored;     // checkpoint keys skipped on purpose, with the reason
  double initializer_range = 0.02;

  // Everything outside the head was loaded and nothing unexpected was found.
  bool complete() const { return missing.empty() && unexpected.empty(); }
  // Several lines, for the log of a program.
  std::string summary() const;
};

// Loads the tensors of the checkpoint at `path` (see CheckpointReader) into
// the parameters and buffers of `model` (converting dtypes), under no-grad.
// A shape difference outside the head is an error naming the tensor, both
// shapes and the file: the config does not describe the checkpoint.
LoadReport load_checkpoint(torch::nn::Module& model, const std::filesystem::path& path, const KeyScheme& scheme);

// Writes `model`'s parameters and buffers under their names to
// <directory>/model.safetensors (metadata {"format": "pt"}, which Hugging Face
// expects) and `config` to <directory>/config.json: a fine-tuned checkpoint
// that this code and Hugging Face's from_pretrained both load.
void save_pretrained(const torch::nn::Module& model, const HfConfig& config, const std::filesystem::path& directory);

// The file names Hugging Face uses.
inline constexpr const char* kConfigFile = "config.json";
inline constexpr const char* kWeightsFile = "model.safetensors";
inline constexpr const char* kShardIndexFile = "model.safetensors.index.json";

}  // namespace tram::hf
