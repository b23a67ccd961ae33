// Text classification data as two-column `text<TAB>label` files without a
// header (the programs' alternative to NLI files, data/nli.h). A label is an
// id (0, 1, ...) or a name; when any training label is not an id, the sorted
// distinct names of the training file become ids 0..K-1.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace tram::hf::data {

struct TextLabelRow {
  std::string text;
  std::string label;   // as written
  std::string source;  // "file:line", for messages about this row
};

// Whether `file` looks like a text<TAB>label file: its first non-empty line
// has exactly one tab (NLI TSV files have a header of three or more columns;
// .json/.jsonl files never are). Throws naming the file when it cannot be
// opened or is empty.
bool is_text_label_file(const std::filesystem::path& file);

// The rows of `file`, at most `limit` of them when limit > 0. Empty lines are
// skipped and a trailing '\r' is dropped. Throws std::runtime_error naming
// file:line for a row without exactly one tab.
std::vector<TextLabelRow> read_text_labels(const std::filesystem::path& file, int64_t limit = 0);

// The label names of the training rows, name -> id in sorted order, when any
// of them is not an id; empty when all are ids.
std::map<std::string, int64_t> label_names(const std::vector<TextLabelRow>& training_rows);

// Label ids are below this, and so is a model config's num_labels
// (HfConfig): a classifier of a million classes is not what these files
// describe, and a corrupt count must not size a head or a label table.
constexpr int64_t kMaxLabels = 1000000;

// The label id of every row: through `names` when it is not empty, else the
// label read as an id. Throws naming file:line for a label that is not an id
// (or is not below kMaxLabels) or not among `names`.
std::vector<int64_t> label_ids(const std::vector<TextLabelRow>& rows, const std::map<std::string, int64_t>& names);

}  // namespace tram::hf::data
