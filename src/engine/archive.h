// Checked reads from a torch::serialize::InputArchive: a missing or mistyped
// entry names the entry (a truncated or damaged checkpoint, or one that a
// tram optimizer's save() did not write).
#pragma once

#include <torch/serialize/archive.h>

#include <string>

namespace tram::detail {

template <typename T>
void read_entry(torch::serialize::InputArchive& archive, const std::string& key, T& value) {
  TORCH_CHECK(archive.try_read(key, value), "the archive has no entry '", key,
              "' (truncated or damaged, or not written by a tram optimizer's save())");
}

inline int64_t read_int(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  read_entry(archive, key, value);
  TORCH_CHECK(value.isInt(), "entry '", key, "' is a ", value.tagKind(), ", expected an integer (damaged archive?)");
  return value.toInt();
}

inline double read_double(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  read_entry(archive, key, value);
  TORCH_CHECK(value.isDouble(), "entry '", key, "' is a ", value.tagKind(), ", expected a number (damaged archive?)");
  return value.toDouble();
}

inline std::string read_string(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  read_entry(archive, key, value);
  TORCH_CHECK(value.isString(), "entry '", key, "' is a ", value.tagKind(), ", expected a string (damaged archive?)");
  return value.toStringRef();
}

}  // namespace tram::detail
