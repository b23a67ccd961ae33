// BERT's WordPiece vocab.txt (one token a line), then encoding with it.
#include "exercise_tokenizer.h"
#include "fuzz_util.h"

#include <tram/hf/tokenizers/wordpiece.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tram::fuzz::ScratchFiles files;
  const auto path = files.write("vocab.txt", tram::fuzz::as_text(data, size));
  tram::fuzz::reject_cleanly([&] { tram::fuzz::exercise(tram::hf::tokenizers::WordPieceTokenizer(path)); },
                             path.filename().string());
  return 0;
}
