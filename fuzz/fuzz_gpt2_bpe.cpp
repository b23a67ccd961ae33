// GPT-2's byte-level BPE files: vocab.json and merges.txt, one input holding
// both (split at "\n\x1e\n", see split_input), then encoding with them.
#include "exercise_tokenizer.h"
#include "fuzz_util.h"

#include <tram/hf/tokenizers/gpt2_bpe.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = tram::fuzz::split_input(tram::fuzz::as_text(data, size), 2);
  tram::fuzz::ScratchFiles files;
  const auto vocab = files.write("vocab.json", parts[0]);
  const auto merges = files.write("merges.txt", parts[1]);
  // Either file may be the one at fault: the message names one of them, and
  // both share the scratch directory's name.
  tram::fuzz::reject_cleanly([&] { tram::fuzz::exercise(tram::hf::tokenizers::Gpt2Tokenizer(vocab, merges)); },
                             tram::fuzz::scratch_directory().filename().string());
  return 0;
}
