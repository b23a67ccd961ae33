// text<TAB>label classification files (tram::hf::data::read_text_labels and
// the label ids the text classification task derives from them). The input
// is a training file and an evaluation file, split at "\n\x1e\n".
#include "fuzz_util.h"

#include <tram/hf/data/text_labels.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = tram::fuzz::split_input(tram::fuzz::as_text(data, size), 2);
  tram::fuzz::ScratchFiles files;
  const auto train = files.write("train.tsv", parts[0]);
  const auto eval = files.write("eval.tsv", parts[1]);
  tram::fuzz::reject_cleanly(
      [&] {
        if (!tram::hf::data::is_text_label_file(train)) return;
        const auto rows = tram::hf::data::read_text_labels(train);
        const auto names = tram::hf::data::label_names(rows);
        (void)tram::hf::data::label_ids(rows, names);
        if (!tram::hf::data::is_text_label_file(eval)) return;
        (void)tram::hf::data::label_ids(tram::hf::data::read_text_labels(eval, /*limit=*/8), names);
      },
      ".tsv");  // train.tsv or eval.tsv
  return 0;
}
