// Reader and writer of the safetensors format (https://github.com/huggingface/safetensors),
// the format of Hugging Face checkpoints:
//
//   [8 bytes]  N, little-endian u64: length of the header
//   [N bytes]  JSON header: {"<name>": {"dtype": "F32", "shape": [2, 3],
//                                       "data_offsets": [begin, end]}, ...,
//                            "__metadata__": {"<key>": "<string>", ...}}
//   [rest]     the raw little-endian tensor bytes; [begin, end) is relative to
//              the first byte after the header
//
// The reader memory-maps the file, validates the whole header before any
// tensor is read, and copies each tensor out on request, so a multi-GB
// checkpoint is never held in memory twice. Every malformed input is reported
// as a std::runtime_error naming the file, the tensor and what is wrong.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tram::hf::safetensors {

// Header entry of one tensor.
struct TensorInfo {
  std::string name;
  std::string dtype;  // the file's dtype string: "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

// The safetensors dtype strings this code reads and writes, and their torch types:
// F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
torch::ScalarType scalar_type_of(const std::string& dtype);  // throws for an unsupported string
std::string dtype_name_of(torch::ScalarType type);           // throws for an unsupported type
const std::vector<std::string>& supported_dtypes();

// An open safetensors file. Construction validates the header completely;
// tensors are then read one at a time.
class File {
 public:
  explicit File(std::string path);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  File(File&&) noexcept;
  File& operator=(File&&) noexcept;

  const std::string& path() const { return path_; }
  // Tensor names in the order of their data offsets (the order on disk).
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A CPU tensor that owns a copy of the bytes, in the file's dtype.
  torch::Tensor tensor(const std::string& name) const;
  // Every tensor of the file.
  std::map<std::string, torch::Tensor> tensors() const;

 private:
  std::string path_;
  int fd_ = -1;
  const unsigned char* mapping_ = nullptr;  // the whole file; null for an empty data section
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;  // 8 + N
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;

  void release() noexcept;
};

// Reads every tensor of `path`.
std::map<std::string, torch::Tensor> load(const std::string& path);

// Writes `tensors` (any device, any layout; copied to contiguous CPU) and
// optional string metadata. Tensors are laid out largest element size first
// and the header is padded with spaces to a multiple of 8 bytes, as the
// reference implementation does, so every tensor is aligned in the file. The
// file is replaced atomically (write_file_atomically, atomic_file.h), so a
// crash never leaves a truncated checkpoint under the final name.
void save(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
          const std::map<std::string, std::string>& metadata = {});

}  // namespace tram::hf::safetensors
