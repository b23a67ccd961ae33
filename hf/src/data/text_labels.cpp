#include <tram/hf/data/text_labels.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>

namespace tram::hf::data {

namespace {

bool is_id(const std::string& text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

bool is_text_label_file(const std::filesystem::path& file) {
  const auto extension = file.extension().string();
  if (extension == ".jsonl" || extension == ".json") return false;
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file.string() + ": cannot be opened");
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line != "\r") return std::count(line.begin(), line.end(), '\t') == 1;
  }
  throw std::runtime_error(file.string() + ": the file is empty");
}

std::vector<TextLabelRow> read_text_labels(const std::filesystem::path& file, int64_t limit) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file.string() + ": cannot be opened");
  std::vector<TextLabelRow> rows;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const std::string where = file.string() + ":" + std::to_string(number);
    const auto tab = line.find('\t');
    if (tab == std::string::npos || line.find('\t', tab + 1) != std::string::npos) {
      throw std::runtime_error(where + ": expected text<TAB>label");
    }
    rows.push_back({line.substr(0, tab), line.substr(tab + 1), where});
    if (limit > 0 && static_cast<int64_t>(rows.size()) >= limit) break;
  }
  return rows;
}

std::map<std::string, int64_t> label_names(const std::vector<TextLabelRow>& training_rows) {
  std::map<std::string, int64_t> names;
  const bool ids = std::all_of(training_rows.begin(), training_rows.end(),
                               [](const TextLabelRow& row) { return is_id(row.label); });
  if (ids) return names;
  std::set<std::string> distinct;
  for (const auto& row : training_rows) distinct.insert(row.label);
  for (const auto& name : distinct) names.emplace(name, static_cast<int64_t>(names.size()));
  return names;
}

std::vector<int64_t> label_ids(const std::vector<TextLabelRow>& rows, const std::map<std::string, int64_t>& names) {
  std::vector<int64_t> ids;
  ids.reserve(rows.size());
  for (const auto& row : rows) {
    if (!names.empty()) {
      const auto it = names.find(row.label);
      if (it == names.end()) {
        throw std::runtime_error(row.source + ": label '" + row.label + "' is not in the training data");
      }
      ids.push_back(it->second);
      continue;
    }
    if (!is_id(row.label)) throw std::runtime_error(row.source + ": label '" + row.label + "' is not an id");
    // The classifier gets max id + 1 outputs: a larger id is a corrupt row,
    // not a head of a million classes to allocate (nor a number to wrap).
    int64_t id = 0;
    for (const char digit : row.label) {
      id = id * 10 + (digit - '0');
      if (id >= kMaxLabels) {
        throw std::runtime_error(row.source + ": label id " + row.label + " is not below " +
                                 std::to_string(kMaxLabels) + "; ids count classes from 0");
      }
    }
    ids.push_back(id);
  }
  return ids;
}

}  // namespace tram::hf::data
