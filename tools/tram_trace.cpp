// tram-trace: runs one tram optimizer on a small MLP described by a JSON case
// and writes a JSON trace of every step, for differential testing against an
// independent implementation (tests/trace/reference.py). Formats: docs/TRACE.md.
//
//   tram-trace CASE.json [-o TRACE.json]
//
// Every method runs through the forward-closure step, so the same runner
// covers the plain bases, SAM/ASAM/FSAM, the TRAM variants and the
// regularizers. A bad case is reported with the file and the field, exit 2.
#include <tram/tram.h>

#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include <cmath>
#include <algorithm>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

constexpr int kExitError = 2;
constexpr const char* kUsage = "usage: tram-trace CASE.json [-o TRACE.json]   (the trace goes to stdout by default)";

// A problem with the case, named by the field it is in ("batches[1].x[2]").
class CaseError : public std::runtime_error {
 public:
  CaseError(std::string field, const std::string& message)
      : std::runtime_error(message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

std::string type_name(const json& value) { return value.type_name(); }

// ---------------------------------------------------------------------------
// Reading fields
// ---------------------------------------------------------------------------

const json& require(const json& object, const std::string& key, const std::string& path = "") {
  const std::string field = path.empty() ? key : path + "." + key;
  auto it = object.find(key);
  if (it == object.end()) throw CaseError(field, "missing field");
  return *it;
}

int64_t integer(const json& value, const std::string& field, int64_t min_value) {
  if (!value.is_number_integer()) throw CaseError(field, "must be an integer, got " + type_name(value));
  const int64_t v = value.get<int64_t>();
  if (v < min_value) throw CaseError(field, "must be >= " + std::to_string(min_value) + ", got " + std::to_string(v));
  return v;
}

double number(const json& value, const std::string& field) {
  if (!value.is_number()) throw CaseError(field, "must be a number, got " + type_name(value));
  return value.get<double>();
}

std::string text(const json& value, const std::string& field) {
  if (!value.is_string()) throw CaseError(field, "must be a string, got " + type_name(value));
  return value.get<std::string>();
}

const json& array(const json& value, const std::string& field) {
  if (!value.is_array()) throw CaseError(field, "must be a list, got " + type_name(value));
  return value;
}

std::string at(const std::string& field, size_t index) { return field + "[" + std::to_string(index) + "]"; }

// A nested list of numbers of exactly `shape` (any rank), as a float64 tensor.
torch::Tensor numbers(const json& value, const std::string& field, const std::vector<int64_t>& shape) {
  std::vector<double> flat;
  std::function<void(const json&, const std::string&, size_t)> walk = [&](const json& v, const std::string& f,
                                                                          size_t dim) {
    if (dim == shape.size()) {
      flat.push_back(number(v, f));
      return;
    }
    array(v, f);
    if (static_cast<int64_t>(v.size()) != shape[dim]) {
      throw CaseError(f, "has " + std::to_string(v.size()) + " entries, expected " + std::to_string(shape[dim]));
    }
    for (size_t i = 0; i < v.size(); ++i) walk(v[i], at(f, i), dim + 1);
  };
  walk(value, field, 0);
  return torch::tensor(flat, torch::kFloat64).reshape(shape);
}

// The entries of a tensor as nested lists (exact: doubles are written with
// enough digits to read back the same value).
ordered_json nested(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  if (t.dim() == 0) return t.item<double>();
  ordered_json out = ordered_json::array();
  for (int64_t i = 0; i < t.size(0); ++i) out.push_back(nested(t[i]));
  return out;
}

// ---------------------------------------------------------------------------
// The case
// ---------------------------------------------------------------------------

struct Batch {
  torch::Tensor x;      // [rows, inputs], the case's dtype
  torch::Tensor y;      // [rows], int64 class indices
  torch::Tensor noise;  // like x, or undefined
};

struct Case {
  std::vector<int64_t> layers;
  std::string activation;
  torch::Dtype dtype = torch::kFloat64;
  json params;
  std::vector<Batch> batches;
  std::string method;
  tram::OptionMap options;
  int64_t steps = 0;
};

// Fields of a case. "description" and "checks" are for people and for the
// test driver (tests/trace/compare.py); tram-trace ignores them.
const std::vector<std::string> kCaseFields = {"layers", "activation", "params",  "dtype",       "batches",
                                              "method", "options",    "base",    "steps",       "description",
                                              "checks"};
const std::vector<std::string> kBaseFields = {"name", "lr",       "momentum", "dampening", "weight_decay",
                                              "nesterov", "betas", "eps",      "amsgrad"};

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

void known_fields(const json& object, const std::string& path, const std::vector<std::string>& valid) {
  for (const auto& [key, value] : object.items()) {
    if (!contains(valid, key)) {
      throw CaseError(path.empty() ? key : path + "." + key, "unknown field; valid fields: " + join(valid));
    }
  }
}

tram::OptionValue option_value(const json& value, const std::string& field) {
  if (value.is_boolean()) return value.get<bool>() ? 1.0 : 0.0;
  if (value.is_number()) return value.get<double>();
  if (value.is_string()) return value.get<std::string>();
  throw CaseError(field, "must be a number, a string or a boolean, got " + type_name(value));
}

// The case's "options" plus the base's keys, translated to factory keys.
tram::OptionMap read_options(const json& root, const std::string& method) {
  tram::OptionMap options;
  if (root.contains("options")) {
    const json& given = root["options"];
    if (!given.is_object()) throw CaseError("options", "must be an object of name: value, got " + type_name(given));
    for (const auto& [key, value] : given.items()) options[key] = option_value(value, "options." + key);
  }
  auto put = [&](const std::string& key, tram::OptionValue value, const std::string& field) {
    if (options.count(key) != 0) {
      throw CaseError(field, "'" + key + "' is given both in 'base' and in 'options'; give it once");
    }
    options[key] = std::move(value);
  };

  const bool plain = contains(tram::base_names(), method);
  if (!root.contains("base")) return options;  // the factory's default base and its defaults
  const json& base = root["base"];
  if (!base.is_object()) throw CaseError("base", "must be an object, got " + type_name(base));
  known_fields(base, "base", kBaseFields);
  const std::string name = text(require(base, "name", "base"), "base.name");
  if (!contains(tram::base_names(), name)) {
    throw CaseError("base.name", "must be one of " + join(tram::base_names()) + ", got '" + name + "'");
  }
  if (plain && name != method) {
    throw CaseError("base.name", "is '" + name + "' but the method is the plain base '" + method + "'");
  }
  if (!plain) put("base", name, "base.name");
  for (const auto& [key, value] : base.items()) {
    const std::string field = "base." + key;
    if (key == "name") continue;
    if (key == "betas") {
      array(value, field);
      if (value.size() != 2) throw CaseError(field, "must be [beta1, beta2]");
      put("beta1", number(value[0], at(field, 0)), field);
      put("beta2", number(value[1], at(field, 1)), field);
    } else if (key == "nesterov" || key == "amsgrad") {
      if (!value.is_boolean() && !value.is_number()) throw CaseError(field, "must be true or false");
      put(key, option_value(value, field), field);
    } else {
      put(key, number(value, field), field);
    }
  }
  return options;
}

Case read_case(const json& root) {
  if (!root.is_object()) throw CaseError("(top level)", "must be an object, got " + type_name(root));
  known_fields(root, "", kCaseFields);
  Case c;

  const json& layers = array(require(root, "layers"), "layers");
  if (layers.size() < 2) throw CaseError("layers", "needs at least [inputs, outputs]");
  for (size_t i = 0; i < layers.size(); ++i) c.layers.push_back(integer(layers[i], at("layers", i), 1));

  c.activation = text(require(root, "activation"), "activation");
  if (c.activation != "tanh" && c.activation != "relu") {
    throw CaseError("activation", "must be \"tanh\" or \"relu\", got \"" + c.activation + "\"");
  }

  const std::string dtype = text(require(root, "dtype"), "dtype");
  if (dtype == "float64") {
    c.dtype = torch::kFloat64;
  } else if (dtype == "float32") {
    c.dtype = torch::kFloat32;
  } else {
    throw CaseError("dtype", "must be \"float32\" or \"float64\", got \"" + dtype + "\"");
  }

  c.params = require(root, "params");
  if (!c.params.is_object()) throw CaseError("params", "must be an object of name: values, got " + type_name(c.params));

  const int64_t inputs = c.layers.front(), classes = c.layers.back();
  const json& batches = array(require(root, "batches"), "batches");
  if (batches.empty()) throw CaseError("batches", "is empty; give at least one batch");
  for (size_t b = 0; b < batches.size(); ++b) {
    const std::string path = at("batches", b);
    const json& batch = batches[b];
    if (!batch.is_object()) throw CaseError(path, "must be an object {x, y[, noise]}, got " + type_name(batch));
    known_fields(batch, path, {"x", "y", "noise"});
    const json& y = array(require(batch, "y", path), path + ".y");
    if (y.empty()) throw CaseError(path + ".y", "is empty; a batch needs at least one row");
    const int64_t rows = static_cast<int64_t>(y.size());
    std::vector<int64_t> labels;
    for (size_t i = 0; i < y.size(); ++i) {
      const int64_t label = integer(y[i], at(path + ".y", i), 0);
      if (label >= classes) {
        throw CaseError(at(path + ".y", i), "class " + std::to_string(label) + " is out of range for " +
                                                std::to_string(classes) + " outputs");
      }
      labels.push_back(label);
    }
    const json& x = array(require(batch, "x", path), path + ".x");
    if (static_cast<int64_t>(x.size()) != rows) {
      throw CaseError(path + ".x", "has " + std::to_string(x.size()) + " rows but y has " + std::to_string(rows) +
                                       " labels; give one label per row");
    }
    Batch out;
    out.x = numbers(require(batch, "x", path), path + ".x", {rows, inputs}).to(c.dtype);
    out.y = torch::tensor(labels, torch::kInt64);
    if (batch.contains("noise")) out.noise = numbers(batch["noise"], path + ".noise", {rows, inputs}).to(c.dtype);
    c.batches.push_back(std::move(out));
  }

  c.method = text(require(root, "method"), "method");
  c.options = read_options(root, c.method);
  c.steps = integer(require(root, "steps"), "steps", 0);
  return c;
}

// ---------------------------------------------------------------------------
// The model: Linear layers at even indices of a Sequential, the activation
// between them (names "0.weight", "0.bias", "2.weight", ...).
// ---------------------------------------------------------------------------

torch::nn::Sequential build_model(const Case& c) {
  torch::nn::Sequential model;
  for (size_t i = 0; i + 1 < c.layers.size(); ++i) {
    if (i > 0) {
      if (c.activation == "tanh") {
        model->push_back(torch::nn::Tanh());
      } else {
        model->push_back(torch::nn::ReLU());
      }
    }
    model->push_back(torch::nn::Linear(c.layers[i], c.layers[i + 1]));
  }
  model->to(c.dtype);

  torch::NoGradGuard no_grad;
  const auto named = model->named_parameters();
  for (const auto& item : named) {
    const std::string field = "params." + item.key();
    if (!c.params.contains(item.key())) {
      throw CaseError(field, "missing (the model's parameters: " + join(named.keys()) + ")");
    }
    const auto shape = item.value().sizes().vec();
    item.value().copy_(numbers(c.params[item.key()], field, shape));
  }
  for (const auto& [key, value] : c.params.items()) {
    if (!named.contains(key)) {
      throw CaseError("params." + key, "is not a parameter of this model (its parameters: " + join(named.keys()) + ")");
    }
  }
  return model;
}

// ---------------------------------------------------------------------------
// Running the case
// ---------------------------------------------------------------------------

std::string what_of(const c10::Error& error) { return error.what_without_backtrace(); }

ordered_json run(const Case& c, const std::string& case_path) {
  torch::nn::Sequential model = build_model(c);

  // Unknown method names are reported against "method"; everything else the
  // factory rejects (unknown keys, bad values) against the options.
  try {
    tram::option_keys(c.method);
  } catch (const c10::Error& error) {
    throw CaseError("method", what_of(error));
  }
  std::unique_ptr<tram::SharpnessAware> optimizer;
  try {
    optimizer = tram::make_optimizer(c.method, model->parameters(), c.options);
  } catch (const c10::Error& error) {
    throw CaseError("options", "rejected by tram::make_optimizer (the keys of 'base' included): " + what_of(error));
  }
  optimizer->set_module(model.ptr());

  // The noise a method adds to x on its noisy passes is the batch's "noise",
  // as given (not scaled by sigma): the same z on every noisy pass of a step.
  size_t batch_index = 0;
  optimizer->set_noise_sampler([&](const torch::Tensor&, const tram::NoiseOptions&, const tram::Pass& pass) {
    const Batch& batch = c.batches[batch_index];
    if (!batch.noise.defined()) {
      throw CaseError(at("batches", batch_index) + ".noise",
                      "missing: method '" + c.method + "' adds noise to its inputs on the " +
                          tram::to_string(pass.kind()) + " pass; give the noise to add, shaped like x");
    }
    return pass.select(batch.noise);
  });

  ordered_json steps = ordered_json::array();
  for (int64_t step = 0; step < c.steps; ++step) {
    batch_index = static_cast<size_t>(step % static_cast<int64_t>(c.batches.size()));
    const Batch& batch = c.batches[batch_index];
    auto closure = [&](const tram::Pass& pass) -> tram::PassOutput {
      // The MLP's input "embeddings" are x itself. Per-row losses let ESAM
      // select rows; pass.select() gives the rows it kept (all on other passes).
      namespace F = torch::nn::functional;
      torch::Tensor logits = model->forward(pass.perturb(pass.select(batch.x)));
      const torch::Tensor y = pass.select(batch.y);
      torch::Tensor rows = F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().reduction(torch::kNone));
      return {F::cross_entropy(logits, y), logits, torch::Tensor(), rows.detach()};
    };
    tram::StepReport report;
    try {
      report = optimizer->step(closure);
    } catch (const c10::Error& error) {
      throw std::runtime_error("step " + std::to_string(step) + " (batch " + std::to_string(batch_index) +
                               "): " + what_of(error));
    }
    ordered_json record;
    record["step"] = step;
    record["batch"] = batch_index;
    record["loss"] = report.loss.value();
    record["regularizer"] = report.regularizer.value();
    record["d"] = report.distance;
    record["radius"] = report.radius;
    record["ascent_norm"] = report.ascent_norm;
    record["ascent_skipped"] = report.ascent_skipped;
    record["perturbation_norm"] = report.perturbation_norm.value();
    record["perturbed_loss"] = report.perturbed_loss.value();
    record["sharpness"] = report.sharpness.value();
    record["passes"] = report.passes;
    ordered_json params = ordered_json::object();
    for (const auto& item : model->named_parameters()) params[item.key()] = nested(item.value());
    record["params"] = std::move(params);
    steps.push_back(std::move(record));
  }

  ordered_json trace;
  trace["tool"] = "tram-trace";
  trace["case"] = case_path;
  trace["method"] = c.method;
  trace["optimizer"] = optimizer->method().name();
  trace["dtype"] = c.dtype == torch::kFloat64 ? "float64" : "float32";
  trace["skipped_ascents"] = optimizer->skipped_ascents();
  trace["steps"] = std::move(steps);
  return trace;
}

// JSON with one line per row: lists of scalars (a bias, a row of a weight
// matrix) stay on one line, everything else is indented. Scalars are written
// by nlohmann::json (doubles with enough digits to read back exactly).
void write_json(std::ostream& out, const ordered_json& value, int depth) {
  const std::string pad(static_cast<size_t>(depth) + 1, ' '), close_pad(static_cast<size_t>(depth), ' ');
  if (value.is_object()) {
    if (value.empty()) {
      out << "{}";
      return;
    }
    out << "{\n";
    size_t i = 0;
    for (const auto& [key, item] : value.items()) {
      out << pad << ordered_json(key).dump() << ": ";
      write_json(out, item, depth + 1);
      out << (++i < value.size() ? ",\n" : "\n");
    }
    out << close_pad << "}";
  } else if (value.is_array()) {
    const bool flat = std::none_of(value.begin(), value.end(),
                                   [](const ordered_json& item) { return item.is_structured(); });
    if (flat) {
      out << "[";
      for (size_t i = 0; i < value.size(); ++i) out << (i ? ", " : "") << value[i].dump();
      out << "]";
      return;
    }
    out << "[\n";
    for (size_t i = 0; i < value.size(); ++i) {
      out << pad;
      write_json(out, value[i], depth + 1);
      out << (i + 1 < value.size() ? ",\n" : "\n");
    }
    out << close_pad << "]";
  } else {
    out << value.dump();
  }
}

int fail(const std::string& message) {
  std::cerr << "tram-trace: " << message << "\n";
  return kExitError;
}

}  // namespace

int main(int argc, char** argv) {
  std::string case_path, output_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage << "\nCase and trace formats: docs/TRACE.md\n";
      return 0;
    }
    if (arg == "-o" || arg == "--output") {
      if (i + 1 >= argc) return fail(std::string("-o needs a file name\n") + kUsage);
      output_path = argv[++i];
    } else if (!arg.empty() && arg[0] == '-' && arg != "-") {
      return fail("unknown option '" + arg + "'\n" + kUsage);
    } else if (case_path.empty()) {
      case_path = arg;
    } else {
      return fail("more than one case file ('" + case_path + "', '" + arg + "')\n" + kUsage);
    }
  }
  if (case_path.empty()) return fail(std::string("no case file\n") + kUsage);

  // One thread: a trace must not depend on how a reduction was split.
  torch::set_num_threads(1);

  ordered_json trace;
  try {
    json root;
    {
      std::ifstream in(case_path);
      if (!in) return fail(case_path + ": cannot open the case file");
      try {
        root = json::parse(in);
      } catch (const json::parse_error& error) {
        return fail(case_path + ": not valid JSON: " + error.what());
      }
    }
    const Case c = read_case(root);
    trace = run(c, case_path);
  } catch (const CaseError& error) {
    return fail(case_path + ": field '" + error.field() + "': " + error.what());
  } catch (const c10::Error& error) {
    return fail(case_path + ": " + what_of(error));
  } catch (const std::exception& error) {
    return fail(case_path + ": " + error.what());
  }

  std::ostringstream text_out;
  write_json(text_out, trace, 0);
  const std::string out = text_out.str() + "\n";
  if (output_path.empty() || output_path == "-") {
    std::cout << out;
    return std::cout.good() ? 0 : fail("cannot write the trace to stdout");
  }
  std::ofstream file(output_path);
  file << out;
  file.close();
  if (!file) return fail(output_path + ": cannot write the trace");
  return 0;
}
