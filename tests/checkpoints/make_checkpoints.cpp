// Writes the checkpoint fixtures of tests/checkpoints/v2: for each method, the
// optimizer state after 3 steps (<method>.pt) and the parameters after steps
// 3 and 4 (<method>.expected.pt). The fixtures committed were written by the
// release that introduced checkpoint format 2 (commit 5f60bea); the test
// Checkpoint.Version2FixturesResumeBitIdentically loads them into today's
// optimizers and checks that step 4 gives the stored parameters bit for bit.
//
//   make_checkpoints OUT_DIR          (target tram-make-checkpoint-fixtures)
#include <tram/tram.h>

#include <torch/torch.h>

#include "../test_util.h"
#include "fixtures.h"

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_checkpoints OUT_DIR\n";
    return 2;
  }
  const std::string out = argv[1];
  for (const std::string method : tram::test::checkpoint_fixture_methods()) {
    tram::test::Problem p;
    auto opt = tram::make_optimizer(method, p.params(), tram::test::checkpoint_fixture_options(method));
    opt->set_noise_sampler(tram::test::checkpoint_fixture_noise);
    for (int i = 0; i < 3; ++i) opt->step(p.forward_closure());
    torch::save(*opt, out + "/" + method + ".pt");
    torch::serialize::OutputArchive expected;
    expected.write("after_3/weight", p.weight.detach().clone());
    expected.write("after_3/bias", p.bias.detach().clone());
    opt->step(p.forward_closure());
    expected.write("after_4/weight", p.weight.detach().clone());
    expected.write("after_4/bias", p.bias.detach().clone());
    expected.save_to(out + "/" + method + ".expected.pt");
    std::cout << method << "\n";
  }
  return 0;
}
