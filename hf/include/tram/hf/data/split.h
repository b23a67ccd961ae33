// Deterministic shuffles and train/validation splits: the same seed gives the
// same indices on every platform and standard library. (std::shuffle and
// std::uniform_int_distribution are implementation-defined, so they are not
// used: a split made on one machine must select the same examples elsewhere.)
#pragma once

#include <cstdint>
#include <vector>

namespace tram::hf::data {

// SplitMix64 (Steele, Lea, Flood 2014): tiny, fully specified, well mixed.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, bound), bound > 0, without modulo bias.
  uint64_t below(uint64_t bound);

 private:
  uint64_t state_;
};

// A uniformly random permutation of 0 .. n-1 (Fisher-Yates).
std::vector<int64_t> permutation(int64_t n, uint64_t seed);

// Indices 0 .. n-1 divided into two disjoint sets that cover them all, each in
// ascending order. validation has round(n * validation_fraction) indices,
// at least 1 when the fraction is positive and at most n - 1 when it is
// below 1, chosen at random by `seed`.
struct Split {
  std::vector<int64_t> train;
  std::vector<int64_t> validation;
};
Split split_indices(int64_t n, double validation_fraction, uint64_t seed);

}  // namespace tram::hf::data
