#include <tram/hf/data/split.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace tram::hf::data {

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t bound) {
  // Reject the top partial copy of [0, bound) so every residue is equally likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t value;
  do {
    value = next();
  } while (value >= limit);
  return value % bound;
}

std::vector<int64_t> permutation(int64_t n, uint64_t seed) {
  if (n < 0) throw std::invalid_argument("permutation: n must be non-negative, got " + std::to_string(n));
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  SplitMix64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(order[static_cast<size_t>(i)], order[rng.below(static_cast<uint64_t>(i) + 1)]);
  return order;
}

Split split_indices(int64_t n, double validation_fraction, uint64_t seed) {
  if (!(validation_fraction >= 0.0 && validation_fraction <= 1.0))
    throw std::invalid_argument("split_indices: validation_fraction must be in [0, 1], got " +
                                std::to_string(validation_fraction));
  int64_t validation = static_cast<int64_t>(std::llround(static_cast<double>(n) * validation_fraction));
  if (validation_fraction > 0.0 && n > 0) validation = std::max<int64_t>(validation, 1);
  if (validation_fraction < 1.0 && n > 1) validation = std::min<int64_t>(validation, n - 1);
  const std::vector<int64_t> order = permutation(n, seed);
  Split split;
  split.validation.assign(order.begin(), order.begin() + validation);
  split.train.assign(order.begin() + validation, order.end());
  std::sort(split.validation.begin(), split.validation.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

}  // namespace tram::hf::data
