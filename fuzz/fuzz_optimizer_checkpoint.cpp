// tram's optimizer checkpoints (tram::load_checkpoint: the archive check, then
// SharpnessAware::load through torch::load:
// format 2, the checksummed state payload, and format 1), then one step from
// the loaded state: a state that loads but breaks the next step is a
// finding too. The first byte picks the method the file is loaded into (the
// methods of tests/checkpoints/v2, whose files are the seeds); the rest is
// the file.
//
// Rejections come from LibTorch's archive reader as well as from tram, and
// LibTorch's messages do not name the file, so no name is required here.
#include "fuzz_util.h"

// What tests/test_util.h expects (the tests get it from their precompiled header).
#include <torch/torch.h>

#include "../tests/checkpoints/fixtures.h"
#include "../tests/test_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const auto methods = tram::test::checkpoint_fixture_methods();
  const std::string& method = methods[data[0] % methods.size()];
  tram::fuzz::ScratchFiles files;
  const auto path = files.write("optimizer.pt", tram::fuzz::as_text(data + 1, size - 1));
  tram::fuzz::reject_cleanly([&] {
    tram::test::Problem problem;
    auto optimizer =
        tram::make_optimizer(method, problem.params(), tram::test::checkpoint_fixture_options(method));
    optimizer->set_noise_sampler(tram::test::checkpoint_fixture_noise);
    tram::load_checkpoint(*optimizer, path.string());
    optimizer->step(problem.forward_closure());
  });
  return 0;
}
