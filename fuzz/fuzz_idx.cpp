// IDX files (MNIST, Fashion-MNIST), plain or gzip (tram::hf::data::read_idx).
#include "fuzz_util.h"

#include <tram/hf/data/image_datasets.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tram::fuzz::ScratchFiles files;
  const auto path = files.write("train-images-idx3-ubyte", tram::fuzz::as_text(data, size));
  tram::fuzz::reject_cleanly([&] { (void)tram::hf::data::read_idx(path).sum(); }, path.filename().string());
  return 0;
}
