// NLI data (MultiNLI/XNLI), TSV or JSON lines (tram::hf::data::read_nli).
// The first byte picks the format (its lowest bit) and whether a language
// filter is set (the next bit); the rest is the file.
#include "fuzz_util.h"

#include <tram/hf/data/nli.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool jsonl = data[0] & 1;
  tram::hf::data::NliReadOptions options;
  if (data[0] & 2) options.language = "en";
  options.skip_unlabeled = !(data[0] & 4);
  tram::fuzz::ScratchFiles files;
  const auto path = files.write(jsonl ? "nli.jsonl" : "nli.tsv", tram::fuzz::as_text(data + 1, size - 1));
  tram::fuzz::reject_cleanly([&] { (void)tram::hf::data::read_nli(path, options); }, path.filename().string());
  return 0;
}
