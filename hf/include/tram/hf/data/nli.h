// Natural language inference data (MultiNLI, XNLI): premise, hypothesis,
// label, one file per language, as TSV or JSON lines.
//
// TSV (.tsv, .txt): a header row names the columns; premise is `premise` or
// `sentence1`, hypothesis `hypothesis`, `hypo` or `sentence2`, label `label`
// or `gold_label` (MultiNLI's and XNLI's own files, and XNLI's translated
// training files, read as they are). Fields are split on tabs only, with no
// quoting (as those files are written).
// JSON lines (.jsonl, .json): one object per line with the same field names;
// a label may be a name or its id (Hugging Face datasets' 0/1/2).
//
// Labels: entailment = 0, neutral = 1, contradiction = 2 (also
// "contradictory", XNLI's translated files), the order of MultiNLI/XNLI on
// the Hugging Face hub. Rows without a gold label (MultiNLI's "-", the hub's
// -1) are skipped, or rejected when skip_unlabeled is false; any other label
// is an error naming file:line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace tram::hf::data {

enum NliLabel : int64_t { kEntailment = 0, kNeutral = 1, kContradiction = 2 };
constexpr int64_t kNumNliLabels = 3;

struct NliExample {
  std::string premise;
  std::string hypothesis;
  int64_t label;
  std::string source;  // "file:line", for messages about this example
};

struct NliReadOptions {
  // Keep only rows whose `language` column/field equals this (XNLI's test and
  // dev files hold all 15 languages in one file); empty keeps every row.
  std::string language;
  bool skip_unlabeled = true;
};

// Throws std::runtime_error naming file:line for unreadable files, missing
// columns or fields, short rows and unknown labels.
std::vector<NliExample> read_nli(const std::filesystem::path& file, const NliReadOptions& options = {});

// "entailment" -> 0 ...; throws std::invalid_argument listing the accepted names.
int64_t nli_label_id(std::string_view name);
const char* nli_label_name(int64_t id);

}  // namespace tram::hf::data
