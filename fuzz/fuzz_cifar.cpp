// CIFAR-100's binary records (tram::hf::data::read_cifar100).
#include "fuzz_util.h"

#include <tram/hf/data/image_datasets.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tram::fuzz::ScratchFiles files;
  const auto path = files.write("train.bin", tram::fuzz::as_text(data, size));
  tram::fuzz::reject_cleanly(
      [&] {
        const auto cifar = tram::hf::data::read_cifar100(path);
        (void)cifar.images.sum();
        (void)cifar.fine_labels.max();
      },
      path.filename().string());
  return 0;
}
