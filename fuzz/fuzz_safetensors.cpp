// safetensors: the 8-byte header length, the JSON header and the data
// section (tram::hf::safetensors::File, every tensor read).
#include "fuzz_util.h"

#include <tram/hf/safetensors.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tram::fuzz::ScratchFiles files;
  const auto path = files.write("model.safetensors", tram::fuzz::as_text(data, size));
  tram::fuzz::reject_cleanly(
      [&] {
        tram::hf::safetensors::File file(path.string());
        (void)file.metadata();
        for (const auto& [name, tensor] : file.tensors()) (void)tensor.sum();
      },
      path.filename().string());
  return 0;
}
