// FNV-1a, 64-bit (Fowler, Noll, Vo): a small, fully specified hash of bytes.
//
// tram uses it where a value must be the same on every machine and in every
// release: the checksum of an optimizer checkpoint's state payload (format 2,
// src/serialization.cpp), and the study's split of texts into training and
// evaluation sides. Changing it would make saved checkpoints unreadable and
// move texts across the split, so it is pinned by tests.
//
//   const uint64_t sum = tram::fnv1a_64(bytes.data(), bytes.size());
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tram {

// The 64-bit FNV-1a hash of `size` bytes at `data` (offset basis
// 14695981039346656037, prime 1099511628211).
uint64_t fnv1a_64(const void* data, size_t size);
inline uint64_t fnv1a_64(std::string_view bytes) { return fnv1a_64(bytes.data(), bytes.size()); }

}  // namespace tram
