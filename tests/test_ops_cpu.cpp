// The fused CPU loops of the multi-tensor ops (src/ops_cpu.cpp) against the
// ATen reference (tram::ops::reference): elementwise results bit for bit,
// reductions to their accumulation's rounding, in fp32/fp64/fp16/bf16, on
// sizes that cross the loops' block boundaries (16384 elements), with empty
// tensors and empty lists, and the inputs the loops do not take (strided
// views; the identity norms, which the reference runs) still right.
#include <tram/ops.h>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

namespace {

using tram::ops::AscentSpec;
using tram::ops::Scaling;
using torch::Tensor;

const std::vector<torch::ScalarType> kTypes = {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16};
const std::vector<Scaling> kScalings = {Scaling::kIdentity, Scaling::kAdaptive, Scaling::kFisher,
                                        Scaling::kReleasedIdentity, Scaling::kReleasedAdaptive};
// One element, an odd size, exactly one block, one past it, several blocks, empty.
const std::vector<int64_t> kSizes = {1, 7, 16384, 16385, 40003, 0};

std::vector<Tensor> random_list(torch::ScalarType type, double scale, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<Tensor> list;
  for (int64_t n : kSizes) list.push_back((torch::randn({n}, torch::kDouble) * scale).to(type));
  // A 2-D tensor too: the loops see any contiguous shape as its elements.
  list.push_back((torch::randn({33, 517}, torch::kDouble) * scale).to(type));
  return list;
}

std::vector<Tensor> clones(const std::vector<Tensor>& list) {
  std::vector<Tensor> out;
  for (const auto& t : list) out.push_back(t.clone());
  return out;
}

AscentSpec spec_for(Scaling scaling, size_t tensors) {
  AscentSpec spec;
  spec.scaling = scaling;
  for (size_t i = 0; i < tensors; ++i) {
    spec.eta.push_back(0.01 * static_cast<double>(i + 1));
    spec.coef.push_back(0.37 / static_cast<double>(i + 2));
  }
  return spec;
}

std::string name_of(torch::ScalarType type, Scaling scaling) {
  return std::string(c10::toString(type)) + " " + tram::ops::to_string(scaling);
}

void expect_equal_lists(const std::vector<Tensor>& actual, const std::vector<Tensor>& expected,
                        const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_TRUE(torch::equal(actual[i], expected[i])) << what << ": tensor " << i << " differs";
  }
}

// A reduction: the same terms summed in another order (the reference sums
// in the tensor's accumulation type, the loops in fp64).
void expect_close(const Tensor& actual, const Tensor& expected, torch::ScalarType type, const std::string& what) {
  EXPECT_EQ(actual.scalar_type(), expected.scalar_type()) << what;
  const double a = actual.item<double>(), e = expected.item<double>();
  const double tolerance = type == torch::kDouble ? 1e-12 : 1e-5;
  EXPECT_NEAR(a, e, tolerance * std::abs(e)) << what;
  EXPECT_GT(e, 0.0) << what;  // the check compares something
}

TEST(OpsCpu, AscendWithBackupMatchesTheReferenceBitForBit) {
  for (const auto type : kTypes) {
    for (const auto scaling : kScalings) {
      const std::string what = name_of(type, scaling);
      const std::vector<Tensor> w = random_list(type, 1.0, 1), g = random_list(type, 0.5, 2);
      const AscentSpec spec = spec_for(scaling, w.size());
      std::vector<Tensor> fused = clones(w), reference = clones(w);
      std::vector<Tensor> fused_backup, reference_backup;
      for (const auto& t : w) {
        fused_backup.push_back(torch::full_like(t, 3.0));
        reference_backup.push_back(torch::full_like(t, 3.0));
      }
      const auto version = fused[1]._version();
      tram::ops::ascend_with_backup(fused, g, fused_backup, spec);
      tram::ops::reference::ascend_with_backup(reference, g, reference_backup, spec);
      expect_equal_lists(fused, reference, what + " params");
      expect_equal_lists(fused_backup, w, what + " backups");
      EXPECT_GT(fused[1]._version(), version) << what << ": autograd must see the write";
      EXPECT_FALSE(torch::equal(fused[2], w[2])) << what << ": the ascent moved nothing";
    }
  }
}

TEST(OpsCpu, AscendFromMatchesTheReferenceAlsoInPlace) {
  for (const auto type : kTypes) {
    for (const auto scaling : kScalings) {
      const std::string what = name_of(type, scaling);
      const std::vector<Tensor> source = random_list(type, 1.0, 3), g = random_list(type, 0.5, 4);
      const AscentSpec spec = spec_for(scaling, source.size());
      std::vector<Tensor> fused, reference;
      for (const auto& t : source) {
        fused.push_back(torch::zeros_like(t));
        reference.push_back(torch::zeros_like(t));
      }
      tram::ops::ascend_from(fused, source, g, spec);
      tram::ops::reference::ascend_from(reference, source, g, spec);
      expect_equal_lists(fused, reference, what);
      // params aliasing sources: each element is read before it is written.
      std::vector<Tensor> aliased = clones(source);
      tram::ops::ascend_from(aliased, aliased, g, spec);
      expect_equal_lists(aliased, reference, what + " in place");
    }
  }
}

TEST(OpsCpu, SquaredNormAndDistanceMatchTheReference) {
  for (const auto type : kTypes) {
    const std::vector<Tensor> w = random_list(type, 1.0, 5), g = random_list(type, 0.5, 6);
    for (const auto scaling : kScalings) {
      const AscentSpec spec = spec_for(scaling, w.size());
      expect_close(tram::ops::squared_norm(w, g, spec), tram::ops::reference::squared_norm(w, g, spec), type,
                   name_of(type, scaling) + " squared_norm");
    }
    expect_close(tram::ops::squared_distance(w, g), tram::ops::reference::squared_distance(w, g), type,
                 std::string(c10::toString(type)) + " squared_distance");
  }
  // The Fisher term g / sqrt(f) saturates at 1 / sqrt(eta) for large g, as
  // the reference's does (g^2 / f is not formed: its sum could overflow).
  const std::vector<Tensor> w = {torch::ones({3})}, large = {torch::full({3}, 1e17f)};
  const AscentSpec fisher_spec = spec_for(Scaling::kFisher, 1);  // eta 0.01
  const double fisher = tram::ops::squared_norm(w, large, fisher_spec).item<double>();
  EXPECT_NEAR(fisher, 3.0 / 0.01, 1e-4 * 300.0);
  EXPECT_NEAR(fisher, tram::ops::reference::squared_norm(w, large, fisher_spec).item<double>(), 1e-4 * 300.0);
}

TEST(OpsCpu, ReductionsDoNotDependOnTheThreadCount) {
  const std::vector<Tensor> w = random_list(torch::kFloat, 1.0, 7), g = random_list(torch::kFloat, 0.5, 8);
  const AscentSpec spec = spec_for(Scaling::kAdaptive, w.size());
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const double one = tram::ops::squared_norm(w, g, spec).item<double>();
  const double distance_one = tram::ops::squared_distance(w, g).item<double>();
  at::set_num_threads(std::max(2, threads));
  const double many = tram::ops::squared_norm(w, g, spec).item<double>();
  const double distance_many = tram::ops::squared_distance(w, g).item<double>();
  at::set_num_threads(threads);
  EXPECT_EQ(one, many);
  EXPECT_EQ(distance_one, distance_many);
}

TEST(OpsCpu, SwapIsExactAndEmptyListsAreNoOps) {
  for (const auto type : kTypes) {
    const std::vector<Tensor> a = random_list(type, 1.0, 9), b = random_list(type, 1.0, 10);
    std::vector<Tensor> x = clones(a), y = clones(b);
    tram::ops::swap(x, y);
    expect_equal_lists(x, b, "swap a");
    expect_equal_lists(y, a, "swap b");
  }
  const std::vector<Tensor> none;
  const AscentSpec spec;
  EXPECT_EQ(tram::ops::squared_norm(none, none, spec).item<double>(), 0.0);
  EXPECT_EQ(tram::ops::squared_distance(none, none).item<double>(), 0.0);
  EXPECT_EQ(tram::ops::squared_distance(none, none).scalar_type(), torch::kDouble);
  EXPECT_NO_THROW(tram::ops::ascend_with_backup(none, none, none, spec));
  EXPECT_NO_THROW(tram::ops::ascend_from(none, none, none, spec));
  EXPECT_NO_THROW(tram::ops::swap(none, none));
}

TEST(OpsCpu, StridedViewsTakeTheReferenceAndAgreeWithIt) {
  // A transposed view is not contiguous: the whole call runs the reference.
  torch::manual_seed(11);
  const Tensor base = torch::randn({64, 48});
  const Tensor grad = torch::randn({48, 64});
  const AscentSpec spec = spec_for(Scaling::kAdaptive, 2);
  std::vector<Tensor> fused = {base.clone().t(), torch::randn({5})};
  std::vector<Tensor> reference = {fused[0].clone(), fused[1].clone()};
  const std::vector<Tensor> g = {grad, torch::randn({5})};
  std::vector<Tensor> backups = {torch::empty_like(grad), torch::empty({5})};
  std::vector<Tensor> reference_backups = {torch::empty_like(grad), torch::empty({5})};
  ASSERT_FALSE(fused[0].is_contiguous());
  tram::ops::ascend_with_backup(fused, g, backups, spec);
  tram::ops::reference::ascend_with_backup(reference, g, reference_backups, spec);
  expect_equal_lists(fused, reference, "strided");
  EXPECT_EQ(tram::ops::squared_norm(fused, g, spec).item<double>(),
            tram::ops::reference::squared_norm(fused, g, spec).item<double>());
}

TEST(OpsCpu, TheReferenceEntriesValidateLikeTheOps) {
  const std::vector<Tensor> a = {torch::zeros({3})}, b = {torch::zeros({4})};
  try {
    tram::ops::reference::squared_distance(a, b);
    FAIL() << "mismatched shapes were accepted";
  } catch (const c10::Error& error) {
    const std::string message = error.what_without_backtrace();
    EXPECT_NE(message.find("tram::ops::reference::squared_distance"), std::string::npos) << message;
    EXPECT_NE(message.find("shape"), std::string::npos) << message;
  }
}

}  // namespace
