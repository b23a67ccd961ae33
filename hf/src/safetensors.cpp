#include <tram/hf/safetensors.h>

#include <tram/hf/atomic_file.h>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <utility>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors stores little-endian data; this reader copies bytes as they are and needs a little-endian host"
#endif

namespace tram::hf::safetensors {
namespace {

constexpr uint64_t kHeaderLengthBytes = 8;
// The reference implementation refuses headers above 100 MB; a larger length
// is a corrupt file, and we must not try to allocate it.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1024 * 1024;
// Header padding and tensor alignment of the files we write.
constexpr uint64_t kAlignment = 8;
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeEntry {
  const char* name;
  torch::ScalarType type;
};

constexpr DtypeEntry kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("safetensors file '" + path + "': " + what);
}

[[noreturn]] void fail_tensor(const std::string& path, const std::string& name, const std::string& what) {
  fail(path, "tensor '" + name + "': " + what);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

uint64_t read_u64_le(const unsigned char* bytes) {
  uint64_t value = 0;
  for (int i = int(kHeaderLengthBytes) - 1; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

// Parses one tensor's header entry; checks everything that does not need
// the other entries.
TensorInfo parse_entry(const std::string& path, const std::string& name, const nlohmann::json& entry,
                       uint64_t data_size) {
  if (!entry.is_object()) fail_tensor(path, name, "header entry is not a JSON object");
  TensorInfo info;
  info.name = name;

  auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) fail_tensor(path, name, "missing or non-string \"dtype\"");
  info.dtype = dtype->get<std::string>();
  const torch::ScalarType type = [&] {
    try {
      return scalar_type_of(info.dtype);
    } catch (const std::exception& error) {
      fail_tensor(path, name, error.what());
    }
  }();

  auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) fail_tensor(path, name, "missing or non-array \"shape\"");
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& dim : *shape) {
    if (!dim.is_number_unsigned()) {
      fail_tensor(path, name, "shape " + shape->dump() + " has an entry that is not a non-negative integer");
    }
    const uint64_t extent = dim.get<uint64_t>();
    if (extent > uint64_t(std::numeric_limits<int64_t>::max())) overflow = true;
    overflow = overflow || __builtin_mul_overflow(numel, extent, &numel);
    info.shape.push_back(int64_t(extent));
  }
  uint64_t byte_size = 0;
  const uint64_t element_size = c10::elementSize(type);
  overflow = overflow || __builtin_mul_overflow(numel, element_size, &byte_size);
  if (overflow) fail_tensor(path, name, "shape " + shape->dump() + " has more elements than a tensor can hold");

  auto offsets = entry.find("data_offsets");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    fail_tensor(path, name,
                "\"data_offsets\" must be [begin, end] with non-negative integers, got " +
                    (offsets == entry.end() ? std::string("nothing") : offsets->dump()));
  }
  info.begin = (*offsets)[0].get<uint64_t>();
  info.end = (*offsets)[1].get<uint64_t>();
  if (info.begin > info.end) {
    fail_tensor(
        path, name,
        "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) + "] end before they begin");
  }
  if (info.end > data_size) {
    fail_tensor(path, name,
                "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                    "] run past the end of the data section (" + std::to_string(data_size) +
                    " bytes); the file is truncated or the header is wrong");
  }
  if (info.end - info.begin != byte_size) {
    fail_tensor(path, name,
                "shape " + shape_string(info.shape) + " of " + info.dtype + " needs " + std::to_string(byte_size) +
                    " bytes but data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                    "] span " + std::to_string(info.end - info.begin));
  }
  return info;
}

}  // namespace

const std::vector<std::string>& supported_dtypes() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> result;
    for (const auto& entry : kDtypes) result.emplace_back(entry.name);
    return result;
  }();
  return names;
}

torch::ScalarType scalar_type_of(const std::string& dtype) {
  for (const auto& entry : kDtypes) {
    if (dtype == entry.name) return entry.type;
  }
  std::string known;
  for (const auto& name : supported_dtypes()) known += (known.empty() ? "" : " ") + name;
  throw std::runtime_error("unsupported dtype '" + dtype + "' (supported: " + known + ")");
}

std::string dtype_name_of(torch::ScalarType type) {
  for (const auto& entry : kDtypes) {
    if (type == entry.type) return entry.name;
  }
  throw std::runtime_error(std::string("safetensors: cannot store tensors of type ") + c10::toString(type));
}

File::File(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path_, std::string("cannot open: ") + std::strerror(errno));
  try {
    struct stat status {};
    if (::fstat(fd_, &status) != 0) fail(path_, std::string("cannot stat: ") + std::strerror(errno));
    if (!S_ISREG(status.st_mode)) fail(path_, "not a regular file");
    file_size_ = uint64_t(status.st_size);
    if (file_size_ < kHeaderLengthBytes) {
      fail(path_, "truncated: " + std::to_string(file_size_) + " bytes, fewer than the " +
                      std::to_string(kHeaderLengthBytes) + "-byte header length");
    }
    void* mapped = ::mmap(nullptr, file_size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (mapped == MAP_FAILED) fail(path_, std::string("cannot map: ") + std::strerror(errno));
    mapping_ = static_cast<const unsigned char*>(mapped);

    const uint64_t header_size = read_u64_le(mapping_);
    if (header_size > kMaxHeaderBytes) {
      fail(path_, "header length " + std::to_string(header_size) + " exceeds the format's limit of " +
                      std::to_string(kMaxHeaderBytes) + " bytes; this is not a safetensors file or it is corrupt");
    }
    if (header_size > file_size_ - kHeaderLengthBytes) {
      fail(path_, "header length " + std::to_string(header_size) + " is larger than the " +
                      std::to_string(file_size_ - kHeaderLengthBytes) +
                      " bytes that follow it; the file is truncated or not a safetensors file");
    }
    data_start_ = kHeaderLengthBytes + header_size;
    const uint64_t data_size = file_size_ - data_start_;

    nlohmann::json header;
    try {
      const char* text = reinterpret_cast<const char*>(mapping_ + kHeaderLengthBytes);
      header = nlohmann::json::parse(text, text + header_size);
    } catch (const nlohmann::json::exception& error) {
      fail(path_, std::string("header is not valid JSON: ") + error.what());
    }
    if (!header.is_object()) fail(path_, "header is not a JSON object");

    for (const auto& [name, entry] : header.items()) {
      if (name == kMetadataKey) {
        if (!entry.is_object()) fail(path_, "\"__metadata__\" is not a JSON object");
        for (const auto& [key, value] : entry.items()) {
          if (!value.is_string()) fail(path_, "\"__metadata__\" entry '" + key + "' is not a string");
          metadata_[key] = value.get<std::string>();
        }
        continue;
      }
      tensors_.emplace(name, parse_entry(path_, name, entry, data_size));
    }

    // No two tensors may share bytes. Empty tensors occupy none, so they may
    // sit anywhere.
    std::vector<const TensorInfo*> by_offset;
    for (const auto& [name, info] : tensors_) {
      if (info.end > info.begin) by_offset.push_back(&info);
    }
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const TensorInfo& previous = *by_offset[i - 1];
      const TensorInfo& current = *by_offset[i];
      if (current.begin < previous.end) {
        fail_tensor(path_, current.name,
                    "data_offsets [" + std::to_string(current.begin) + ", " + std::to_string(current.end) +
                        "] overlap those of tensor '" + previous.name + "' [" + std::to_string(previous.begin) + ", " +
                        std::to_string(previous.end) + "]");
      }
    }
  } catch (...) {
    release();
    throw;
  }
}

File::~File() { release(); }

File::File(File&& other) noexcept { *this = std::move(other); }

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    mapping_ = std::exchange(other.mapping_, nullptr);
    file_size_ = std::exchange(other.file_size_, 0);
    data_start_ = other.data_start_;
    tensors_ = std::move(other.tensors_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

void File::release() noexcept {
  if (mapping_ != nullptr) ::munmap(const_cast<unsigned char*>(mapping_), file_size_);
  mapping_ = nullptr;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::vector<std::string> File::names() const {
  std::vector<const TensorInfo*> infos;
  for (const auto& [name, info] : tensors_) infos.push_back(&info);
  std::stable_sort(infos.begin(), infos.end(),
                   [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  std::vector<std::string> result;
  for (const TensorInfo* info : infos) result.push_back(info->name);
  return result;
}

const TensorInfo& File::info(const std::string& name) const {
  auto found = tensors_.find(name);
  if (found == tensors_.end()) fail_tensor(path_, name, "no such tensor in the file");
  return found->second;
}

torch::Tensor File::tensor(const std::string& name) const {
  const TensorInfo& entry = info(name);
  torch::Tensor result = torch::empty(entry.shape, torch::TensorOptions().dtype(scalar_type_of(entry.dtype)));
  const uint64_t bytes = entry.end - entry.begin;
  if (bytes == 0) return result;
  const unsigned char* source = mapping_ + data_start_ + entry.begin;
  if (result.scalar_type() == torch::kBool) {
    // Any byte but 0 or 1 is not a valid bool; torch would misbehave on it.
    for (uint64_t i = 0; i < bytes; ++i) {
      if (source[i] > 1) fail_tensor(path_, name, "BOOL data holds byte " + std::to_string(source[i]) + ", not 0 or 1");
    }
  }
  std::memcpy(result.data_ptr(), source, bytes);
  return result;
}

std::map<std::string, torch::Tensor> File::tensors() const {
  std::map<std::string, torch::Tensor> result;
  for (const auto& name : names()) result.emplace(name, tensor(name));
  return result;
}

std::map<std::string, torch::Tensor> load(const std::string& path) { return File(path).tensors(); }

void save(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
          const std::map<std::string, std::string>& metadata) {
  struct Entry {
    std::string name;
    torch::Tensor data;  // contiguous CPU
    std::string dtype;
  };
  std::vector<Entry> entries;
  for (const auto& [name, tensor] : tensors) {
    if (name == kMetadataKey) fail_tensor(path, name, "this name is reserved for the metadata");
    if (!tensor.defined()) fail_tensor(path, name, "tensor is undefined");
    std::string dtype;
    try {
      dtype = dtype_name_of(tensor.scalar_type());
    } catch (const std::exception& error) {
      fail_tensor(path, name, error.what());
    }
    entries.push_back({name, tensor.detach().to(torch::kCPU).contiguous(), dtype});
  }
  // Largest elements first: every offset is then a multiple of its element size.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.data.element_size() > b.data.element_size(); });

  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const auto& entry : entries) {
    const uint64_t bytes = uint64_t(entry.data.nbytes());
    header[entry.name] = {
        {"dtype", entry.dtype}, {"shape", entry.data.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = header.dump();
  header_text.append((kAlignment - header_text.size() % kAlignment) % kAlignment, ' ');

  write_file_atomically(path, [&](const std::filesystem::path& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) fail(temporary.string(), std::string("cannot create: ") + std::strerror(errno));
    unsigned char length[kHeaderLengthBytes];
    uint64_t size = header_text.size();
    for (uint64_t i = 0; i < kHeaderLengthBytes; ++i, size >>= 8) length[i] = static_cast<unsigned char>(size & 0xff);
    out.write(reinterpret_cast<const char*>(length), sizeof(length));
    out.write(header_text.data(), std::streamsize(header_text.size()));
    for (const auto& entry : entries) {
      out.write(static_cast<const char*>(entry.data.data_ptr()), std::streamsize(entry.data.nbytes()));
    }
    out.close();
    if (!out) fail(temporary.string(), std::string("write failed: ") + std::strerror(errno));
  });
}

}  // namespace tram::hf::safetensors
