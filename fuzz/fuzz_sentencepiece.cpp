// XLM-R's sentencepiece.bpe.model, read through libsentencepiece
// (tram::hf::tokenizers::XlmrTokenizer), then encoding with it.
#include "exercise_tokenizer.h"
#include "fuzz_util.h"

#include <tram/hf/tokenizers/xlmr_sentencepiece.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tram::fuzz::ScratchFiles files;
  const auto path = files.write("sentencepiece.bpe.model", tram::fuzz::as_text(data, size));
  tram::fuzz::reject_cleanly([&] { tram::fuzz::exercise(tram::hf::tokenizers::XlmrTokenizer(path)); },
                             path.filename().string());
  return 0;
}
