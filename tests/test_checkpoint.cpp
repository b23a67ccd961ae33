// Damaged and mismatched optimizer checkpoints: SharpnessAware::load rejects
// them with a message that says what is wrong, and the optimizer it was
// called on is left exactly as it was.
#include <tram/tram.h>

#include "checkpoints/fixtures.h"
#include "test_util.h"

#include <array>
#include <cstring>
#include <functional>
#include <limits>
#include <sstream>
#include <string>

namespace {

using torch::Tensor;
using tram::test::Problem;

std::string saved_bytes(const tram::SharpnessAware& opt) {
  std::ostringstream out;
  torch::save(opt, out);
  return out.str();
}

// Loads `bytes` into `opt` and returns the error message ("" if it loaded).
std::string load_error(tram::SharpnessAware& opt, const std::string& bytes) {
  std::istringstream in(bytes);
  try {
    torch::load(opt, in);
  } catch (const c10::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Two identical runs of `method` (Adam base, 2 steps); `damage` tries to load
// a bad checkpoint into the second. Afterwards both take 3 more steps: equal
// parameters and counters bit for bit mean the failed load changed nothing
// (not the parameter-set buffers, not Adam's moments, not the group options).
tram::OptionMap options_for(const std::string& method) {
  // TRAM's scale makes its ascent large enough to matter in the comparisons.
  return tram::parse_options(method.rfind("tram-", 0) == 0 ? "base=adam,lr=0.01,scale=10" : "base=adam,lr=0.01");
}

void expect_unchanged_after(const std::string& method, const std::function<void(tram::SharpnessAware&)>& damage) {
  const auto options = options_for(method);
  Problem reference, damaged;
  auto a = tram::make_optimizer(method, reference.params(), options);
  auto b = tram::make_optimizer(method, damaged.params(), options);
  for (int i = 0; i < 2; ++i) {
    a->step(reference.forward_closure());
    b->step(damaged.forward_closure());
  }
  damage(*b);
  EXPECT_FALSE(b->perturbed());
  EXPECT_EQ(b->step_count(), 2);
  for (int i = 0; i < 3; ++i) {
    a->step(reference.forward_closure());
    b->step(damaged.forward_closure());
  }
  EXPECT_EQ(a->step_count(), b->step_count());
  EXPECT_EQ(a->group_options(0).rho(), b->group_options(0).rho());
  for (size_t i = 0; i < reference.params().size(); ++i) {
    EXPECT_TRUE(torch::equal(reference.params()[i], damaged.params()[i])) << method << " tensor " << i;
  }
}

// A checkpoint of `method` after 2 steps on another run, with rho changed so
// that a load that went through would be visible.
std::string checkpoint_of(const std::string& method) {
  Problem p(11);
  auto opt = tram::make_optimizer(method, p.params(), options_for(method));
  opt->group_options(0).rho(0.321);
  for (int i = 0; i < 2; ++i) opt->step(p.forward_closure());
  return saved_bytes(*opt);
}

TEST(Checkpoint, GoodCheckpointLoads) {
  // The control for the tests below: the same bytes, undamaged, load and
  // change the optimizer.
  const std::string bytes = checkpoint_of("tram-prev");
  Problem p;
  auto opt = tram::make_optimizer("tram-prev", p.params(), tram::parse_options("base=adam,lr=0.01"));
  EXPECT_EQ(load_error(*opt, bytes), "");
  EXPECT_EQ(opt->group_options(0).rho(), 0.321);
  EXPECT_EQ(opt->step_count(), 2);
}

TEST(Checkpoint, TruncatedFileIsRejected) {
  const std::string bytes = checkpoint_of("tram-prev");
  for (const size_t keep : {bytes.size() / 2, bytes.size() - 1, size_t{10}}) {
    SCOPED_TRACE(keep);
    expect_unchanged_after("tram-prev", [&](tram::SharpnessAware& opt) {
      // LibTorch's zip reader rejects a cut file before tram sees it, with
      // its own message (which depends on where the cut is).
      EXPECT_NE(load_error(opt, bytes.substr(0, keep)), "");
    });
  }
}

// Rewrites a version-2 checkpoint with `edit` applied to its payload bytes.
std::string with_payload(const std::string& bytes, const std::function<void(std::string&)>& edit) {
  torch::serialize::InputArchive in;
  std::istringstream stream(bytes);
  in.load_from(stream);
  c10::IValue version, method, size, checksum;
  Tensor payload;
  in.read("tram/version", version);
  in.read("tram/method", method);
  in.read("tram/payload", payload, true);
  in.read("tram/payload_size", size);
  in.read("tram/payload_fnv1a", checksum);
  std::string data(reinterpret_cast<const char*>(payload.data_ptr<uint8_t>()), payload.numel());
  edit(data);
  Tensor edited = torch::empty({static_cast<int64_t>(data.size())}, torch::kUInt8);
  std::memcpy(edited.data_ptr<uint8_t>(), data.data(), data.size());
  torch::serialize::OutputArchive out;
  out.write("tram/version", version);
  out.write("tram/method", method);
  out.write("tram/payload", edited, true);
  out.write("tram/payload_size", size);
  out.write("tram/payload_fnv1a", checksum);
  std::ostringstream result;
  out.save_to(result);
  return result.str();
}

TEST(Checkpoint, TruncatedStatePayloadIsRejected) {
  // A file that is itself intact, but whose optimizer state was cut short
  // (e.g. written by a process that died while copying it).
  const std::string bytes = with_payload(checkpoint_of("tram-prev"), [](std::string& data) {
    data.resize(data.size() / 2);
  });
  expect_unchanged_after("tram-prev", [&](tram::SharpnessAware& opt) {
    const std::string error = load_error(opt, bytes);
    EXPECT_TRUE(contains(error, "cannot load optimizer state: the state payload has")) << error;
    EXPECT_TRUE(contains(error, "(truncated or damaged archive)")) << error;
  });
}

TEST(Checkpoint, FlippedBitInTheStateIsRejectedByTheChecksum) {
  // A distinctive parameter value; MESA's teacher starts as an exact copy
  // of the parameters, so its bytes appear once in the checkpoint (inside
  // tram's payload; Adam has no state before the first step).
  constexpr double kMarker = 1234.5678125;
  Problem p(11);
  {
    torch::NoGradGuard no_grad;
    p.weight[0][0].fill_(kMarker);
  }
  auto saved = tram::make_optimizer("mesa", p.params(), tram::parse_options("base=adam,lr=0.01"));
  std::string bytes = saved_bytes(*saved);
  char pattern[sizeof(double)];
  std::memcpy(pattern, &kMarker, sizeof(double));
  const std::string marker(pattern, sizeof(double));
  const auto at = bytes.find(marker);
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(bytes.find(marker, at + 1), std::string::npos) << "the marker must occur once";
  bytes[at] = static_cast<char>(bytes[at] ^ 0x01);  // lowest mantissa bit: a plausible value, silently wrong

  expect_unchanged_after("mesa", [&](tram::SharpnessAware& opt) {
    const std::string error = load_error(opt, bytes);
    EXPECT_TRUE(contains(error, "tram MESA: cannot load optimizer state")) << error;
    EXPECT_TRUE(contains(error, "checksum mismatch")) << error;
    EXPECT_TRUE(contains(error, "damaged")) << error;
  });
}

TEST(Checkpoint, FlippedBitInTheArchiveStructureIsRejected) {
  std::string bytes = checkpoint_of("asam");
  // The end-of-central-directory record's signature "PK\5\6".
  const auto eocd = bytes.rfind(std::string("PK\x05\x06", 4));
  ASSERT_NE(eocd, std::string::npos);
  bytes[eocd + 2] = static_cast<char>(bytes[eocd + 2] ^ 0x40);
  expect_unchanged_after("asam", [&](tram::SharpnessAware& opt) {
    const std::string error = load_error(opt, bytes);
    EXPECT_TRUE(contains(error, "zip archive")) << error;
  });
}

TEST(Checkpoint, WrongMethodIsRejectedWithBothNames) {
  const std::string bytes = checkpoint_of("asam");
  expect_unchanged_after("sam", [&](tram::SharpnessAware& opt) {
    const std::string error = load_error(opt, bytes);
    EXPECT_TRUE(contains(error, "tram SAM: cannot load optimizer state")) << error;
    EXPECT_TRUE(contains(error, "written by a ASAM optimizer; load it into a ASAM optimizer")) << error;
  });
  // A regularizer's checkpoint into the TRAM variant with the same buffer.
  const std::string trpo = checkpoint_of("trpo");
  expect_unchanged_after("tram-prev", [&](tram::SharpnessAware& opt) {
    const std::string error = load_error(opt, trpo);
    EXPECT_TRUE(contains(error, "written by a TRPO optimizer")) << error;
  });
}

TEST(Checkpoint, ArchiveOfAPlainLibTorchOptimizerNamesTheMissingEntry) {
  Problem p(11);
  torch::optim::Adam adam(p.params(), torch::optim::AdamOptions(0.01));
  std::ostringstream out;
  torch::save(adam, out);
  expect_unchanged_after("sam", [&](tram::SharpnessAware& opt) {
    const std::string error = load_error(opt, out.str());
    EXPECT_TRUE(contains(error, "tram SAM: cannot load optimizer state: the archive has no entry 'tram/version'"))
        << error;
  });
}

TEST(Checkpoint, OtherParameterShapesAreRejected) {
  // Same method, a model with 5 inputs instead of 4.
  Problem other(11, 8, 5, 3);
  auto opt = tram::make_optimizer("tram-prev", other.params(), tram::parse_options("base=adam,lr=0.01"));
  opt->step(other.forward_closure());
  const std::string bytes = saved_bytes(*opt);
  expect_unchanged_after("tram-prev", [&](tram::SharpnessAware& target) {
    const std::string error = load_error(target, bytes);
    EXPECT_TRUE(contains(error, "tram/previous/0 has shape [3, 5] but the parameter has shape [3, 4]")) << error;
  });
}

// Checkpoints written before the payload format (version 1: the state
// directly in the archive) still load.
TEST(Checkpoint, VersionOneArchivesStillLoad) {
  Problem p(11);
  auto source = tram::make_optimizer("sam", p.params(), tram::parse_options("base=adam,lr=0.01"));
  source->group_options(0).rho(0.25).eta(0.5).fisher_eta(0.125);
  for (int i = 0; i < 2; ++i) source->step(p.forward_closure());
  torch::serialize::OutputArchive archive;
  archive.write("tram/version", c10::IValue(int64_t{1}));
  archive.write("tram/method", c10::IValue(std::string("SAM")));
  archive.write("tram/step_count", c10::IValue(int64_t{2}));
  archive.write("tram/skipped_ascents", c10::IValue(int64_t{0}));
  archive.write("tram/skipped_steps", c10::IValue(int64_t{0}));
  archive.write("tram/groups", c10::IValue(int64_t{1}));
  torch::serialize::OutputArchive group(archive.compilation_unit());
  group.write("rho", c10::IValue(0.25));
  group.write("eta", c10::IValue(0.5));
  group.write("fisher_eta", c10::IValue(0.125));
  archive.write("tram/group/0", group);
  for (const std::string set : {"previous", "pretrained", "ema"}) {
    archive.write("tram/" + set + "/size", c10::IValue(int64_t{0}));
  }
  torch::serialize::OutputArchive base(archive.compilation_unit());
  source->base().save(base);
  archive.write("base", base);
  std::ostringstream out;
  archive.save_to(out);

  Problem q(11);
  auto opt = tram::make_optimizer("sam", q.params(), tram::parse_options("base=adam,lr=0.01"));
  ASSERT_EQ(load_error(*opt, out.str()), "");
  EXPECT_EQ(opt->step_count(), 2);
  EXPECT_EQ(opt->group_options(0).rho(), 0.25);
  EXPECT_EQ(opt->group_options(0).eta(), 0.5);
  EXPECT_EQ(opt->group_options(0).fisher_eta(), 0.125);
  // Adam's moments came along: the next step equals the source's.
  for (size_t i = 0; i < p.params().size(); ++i) {
    torch::NoGradGuard no_grad;
    q.params()[i].copy_(p.params()[i]);
  }
  source->step(p.forward_closure());
  opt->step(q.forward_closure());
  for (size_t i = 0; i < p.params().size(); ++i) EXPECT_TRUE(torch::equal(p.params()[i], q.params()[i])) << i;
}

}  // namespace

// Checkpoints written by the release that introduced format 2 (before the
// engine was split into policies; tests/checkpoints/make_checkpoints.cpp made
// them) load into today's optimizers and resume bit for bit: step 4 from the
// loaded state gives the parameters that release computed. Bit for bit on
// any CPU for the methods whose step is arithmetic only; the regularizers'
// KL (TRPO, R3F, MESA) goes through ATen's vectorised exp and log, whose
// last bit depends on the CPU and the kernels ATen dispatches to there (on
// an AVX-512 Xeon, r3f and asam+trpo differ from the fixtures, made on
// another CPU, by one ulp of fp64). Those are compared to 4 ulp: a state
// that did not load (moments, step count, noise) moves step 4 by far more.
TEST(Checkpoint, Version2FixturesResumeBitIdentically) {
  const std::string dir = std::string(TRAM_SOURCE_DIR) + "/tests/checkpoints/v2/";
  for (const std::string method : tram::test::checkpoint_fixture_methods()) {
    SCOPED_TRACE(method);
    torch::serialize::InputArchive expected;
    expected.load_from(dir + method + ".expected.pt");
    Tensor weight, bias, weight_4, bias_4;
    expected.read("after_3/weight", weight);
    expected.read("after_3/bias", bias);
    expected.read("after_4/weight", weight_4);
    expected.read("after_4/bias", bias_4);

    Problem p;  // the fixtures' batch; its parameters are replaced by step 3's
    {
      torch::NoGradGuard no_grad;
      p.weight.copy_(weight);
      p.bias.copy_(bias);
    }
    auto opt = tram::make_optimizer(method, p.params(), tram::test::checkpoint_fixture_options(method));
    opt->set_noise_sampler(tram::test::checkpoint_fixture_noise);
    torch::load(*opt, dir + method + ".pt");
    EXPECT_EQ(opt->step_count(), 3);
    opt->step(p.forward_closure());
    const bool transcendental = opt->method().regularizer() != nullptr;
    const std::vector<std::array<Tensor, 3>> compared = {{p.weight, weight_4, weight}, {p.bias, bias_4, bias}};
    for (const auto& [actual, after_4, after_3] : compared) {
      if (!transcendental) {
        EXPECT_TRUE(torch::equal(actual, after_4));
        continue;
      }
      const double ulp = std::numeric_limits<double>::epsilon() * after_4.abs().max().item<double>();
      EXPECT_LE((actual - after_4).abs().max().item<double>(), 4 * ulp);
      EXPECT_GT((after_4 - after_3).abs().max().item<double>(), 1e3 * ulp);  // step 4 moved them
    }
  }
}
