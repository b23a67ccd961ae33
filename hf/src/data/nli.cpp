#include <tram/hf/data/nli.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <optional>
#include <stdexcept>

namespace tram::hf::data {
namespace {

constexpr std::array<const char*, 3> kPremiseNames = {"premise", "sentence1", nullptr};
constexpr std::array<const char*, 3> kHypothesisNames = {"hypothesis", "hypo", "sentence2"};
constexpr std::array<const char*, 3> kLabelNames = {"label", "gold_label", nullptr};
constexpr const char* kAcceptedLabels =
    "entailment, neutral, contradiction (or contradictory), or their ids 0, 1, 2";

bool is_unlabeled(std::string_view label) { return label == "-" || label == "-1"; }

template <size_t N>
bool matches(std::string_view name, const std::array<const char*, N>& names) {
  return std::any_of(names.begin(), names.end(), [&](const char* n) { return n && name == n; });
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> fields;
  size_t begin = 0;
  for (size_t tab; (tab = line.find('\t', begin)) != std::string::npos; begin = tab + 1)
    fields.push_back(line.substr(begin, tab - begin));
  fields.push_back(line.substr(begin));
  return fields;
}

// Adds one row, `label` as the file spells it; an unlabeled row is skipped or rejected.
void add_example(std::vector<NliExample>& out, std::string premise, std::string hypothesis,
                 const std::string& label, const std::string& at, const NliReadOptions& options) {
  if (is_unlabeled(label)) {
    if (options.skip_unlabeled) return;
    throw std::runtime_error(at + ": the row has no gold label (\"" + label +
                             "\"); set skip_unlabeled to skip such rows");
  }
  int64_t id;
  try {
    id = nli_label_id(label);
  } catch (const std::invalid_argument&) {
    throw std::runtime_error(at + ": unknown label \"" + label + "\"; expected " + kAcceptedLabels);
  }
  out.push_back({std::move(premise), std::move(hypothesis), id, at});
}

std::vector<NliExample> read_tsv(std::ifstream& in, const std::string& where, const NliReadOptions& options) {
  std::string line;
  int64_t line_number = 0;
  std::vector<std::string> header;
  while (header.empty() && std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) header = split_tabs(line);
  }
  if (header.empty()) throw std::runtime_error(where + ": the file is empty; expected a header row");
  std::optional<size_t> premise, hypothesis, label, language;
  for (size_t i = 0; i < header.size(); ++i) {
    if (!premise && matches(header[i], kPremiseNames)) premise = i;
    else if (!hypothesis && matches(header[i], kHypothesisNames)) hypothesis = i;
    else if (!label && matches(header[i], kLabelNames)) label = i;
    else if (!language && header[i] == "language") language = i;
  }
  const std::string at_header = where + ":" + std::to_string(line_number);
  if (!premise || !hypothesis || !label)
    throw std::runtime_error(at_header + ": the header needs a premise (premise|sentence1), a hypothesis "
                             "(hypothesis|hypo|sentence2) and a label (label|gold_label) column; got \"" +
                             line + "\"");
  if (!options.language.empty() && !language)
    throw std::runtime_error(at_header + ": a language (\"" + options.language +
                             "\") was asked for, but the header has no language column");
  const size_t needed = std::max({*premise, *hypothesis, *label, language.value_or(0)}) + 1;

  std::vector<NliExample> examples;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const std::string at = where + ":" + std::to_string(line_number);
    std::vector<std::string> fields = split_tabs(line);
    if (fields.size() < needed)
      throw std::runtime_error(at + ": " + std::to_string(fields.size()) + " tab-separated fields, the header needs " +
                               std::to_string(needed));
    if (!options.language.empty() && fields[*language] != options.language) continue;
    add_example(examples, std::move(fields[*premise]), std::move(fields[*hypothesis]), fields[*label], at, options);
  }
  return examples;
}

std::vector<NliExample> read_jsonl(std::ifstream& in, const std::string& where, const NliReadOptions& options) {
  std::vector<NliExample> examples;
  std::string line;
  for (int64_t line_number = 1; std::getline(in, line); ++line_number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string at = where + ":" + std::to_string(line_number);
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(at + ": not a JSON object (" + e.what() + ")");
    }
    if (!row.is_object()) throw std::runtime_error(at + ": expected a JSON object per line");
    const auto field = [&](const auto& names, const char* what) -> const nlohmann::json& {
      for (const char* name : names)
        if (name && row.contains(name)) return row[name];
      std::string list;
      for (const char* name : names)
        if (name) list += (list.empty() ? "" : "|") + std::string(name);
      throw std::runtime_error(at + ": no " + what + " field (" + list + ")");
    };
    if (!options.language.empty()) {
      if (!row.contains("language"))
        throw std::runtime_error(at + ": a language (\"" + options.language + "\") was asked for, but the row has none");
      if (row["language"] != options.language) continue;
    }
    const nlohmann::json& premise = field(kPremiseNames, "premise");
    const nlohmann::json& hypothesis = field(kHypothesisNames, "hypothesis");
    const nlohmann::json& label = field(kLabelNames, "label");
    if (!premise.is_string() || !hypothesis.is_string())
      throw std::runtime_error(at + ": premise and hypothesis must be strings");
    std::string label_text;
    if (label.is_string()) label_text = label.get<std::string>();
    else if (label.is_number_integer()) label_text = std::to_string(label.get<int64_t>());
    else throw std::runtime_error(at + ": the label must be a string or an integer, got " + label.dump());
    add_example(examples, premise.get<std::string>(), hypothesis.get<std::string>(), label_text, at, options);
  }
  return examples;
}

}  // namespace

int64_t nli_label_id(std::string_view name) {
  if (name == "entailment" || name == "0") return kEntailment;
  if (name == "neutral" || name == "1") return kNeutral;
  if (name == "contradiction" || name == "contradictory" || name == "2") return kContradiction;
  throw std::invalid_argument("unknown NLI label \"" + std::string(name) + "\"; expected " + kAcceptedLabels);
}

const char* nli_label_name(int64_t id) {
  switch (id) {
    case kEntailment: return "entailment";
    case kNeutral: return "neutral";
    case kContradiction: return "contradiction";
  }
  throw std::invalid_argument("NLI label id " + std::to_string(id) + " is outside [0, 3)");
}

std::vector<NliExample> read_nli(const std::filesystem::path& file, const NliReadOptions& options) {
  const std::string where = file.string();
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(where + ": cannot open the file");
  const std::string extension = file.extension().string();
  if (extension == ".tsv" || extension == ".txt") return read_tsv(in, where, options);
  if (extension == ".jsonl" || extension == ".json") return read_jsonl(in, where, options);
  throw std::runtime_error(where + ": unknown NLI file type \"" + extension +
                           "\"; expected .tsv/.txt (tab-separated with a header) or .jsonl/.json (JSON lines)");
}

}  // namespace tram::hf::data
