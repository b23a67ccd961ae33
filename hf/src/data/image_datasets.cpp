#include <tram/hf/data/image_datasets.h>

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tram::hf::data {
namespace {

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarPixels = 3 * kCifarSide * kCifarSide;
constexpr int64_t kCifarRecord = 2 + kCifarPixels;  // coarse label, fine label, pixels
constexpr int64_t kCifar10Record = 1 + kCifarPixels;
constexpr int64_t kCifarCoarseClasses = 20;
constexpr int64_t kCifarFineClasses = 100;

std::string hex32(uint32_t value) {
  char text[11];
  std::snprintf(text, sizeof text, "0x%08X", value);
  return text;
}

// The whole file, decompressed when it is gzip (zlib reads plain files as
// they are). `compressed` tells which, for messages.
std::vector<uint8_t> read_maybe_gzip(const std::filesystem::path& file, bool& compressed) {
  const std::string where = file.string();
  gzFile in = gzopen(where.c_str(), "rb");
  if (!in) throw std::runtime_error(where + ": cannot open the file");
  std::vector<uint8_t> bytes;
  constexpr unsigned kChunk = 1u << 20;
  for (;;) {
    const size_t old_size = bytes.size();
    bytes.resize(old_size + kChunk);
    const int n = gzread(in, bytes.data() + old_size, kChunk);
    if (n < 0) {
      int code = 0;
      const std::string message = gzerror(in, &code);
      gzclose(in);
      throw std::runtime_error(where + ": corrupt gzip data after " + std::to_string(old_size) +
                               " decompressed bytes (" + message + ")");
    }
    bytes.resize(old_size + static_cast<size_t>(n));
    if (n == 0) break;
  }
  compressed = gzdirect(in) == 0;
  int code = Z_OK;
  gzerror(in, &code);
  gzclose(in);
  // Z_BUF_ERROR at the end: the input stopped in the middle of a gzip stream.
  if (code == Z_BUF_ERROR)
    throw std::runtime_error(where + ": the gzip stream is truncated (it ends after " +
                             std::to_string(bytes.size()) + " decompressed bytes); download it again");
  return bytes;
}

struct IdxType {
  torch::ScalarType scalar_type;
  size_t size;
  const char* name;
};

IdxType idx_type(uint8_t code, const std::string& where) {
  switch (code) {
    case 0x08: return {torch::kUInt8, 1, "u8"};
    case 0x09: return {torch::kInt8, 1, "i8"};
    case 0x0B: return {torch::kInt16, 2, "i16"};
    case 0x0C: return {torch::kInt32, 4, "i32"};
    case 0x0D: return {torch::kFloat32, 4, "f32"};
    case 0x0E: return {torch::kFloat64, 8, "f64"};
  }
  throw std::runtime_error(where + ": offset 2: unknown IDX element type " + std::to_string(code) +
                           "; expected 0x08 (u8), 0x09, 0x0B, 0x0C, 0x0D or 0x0E");
}

bool host_is_little_endian() {
  const uint16_t probe = 1;
  uint8_t first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

std::filesystem::path plain_or_gzip(const std::filesystem::path& directory, const std::string& name) {
  for (const std::string& candidate : {name, name + ".gz"})
    if (std::filesystem::exists(directory / candidate)) return directory / candidate;
  throw std::runtime_error((directory / name).string() + "[.gz]: not found (MNIST layout: " +
                           "{train,t10k}-{images-idx3,labels-idx1}-ubyte, plain or gzip)");
}

}  // namespace

Cifar100 read_cifar100(const std::filesystem::path& file) {
  const std::string where = file.string();
  std::error_code error;
  const auto size = static_cast<int64_t>(std::filesystem::file_size(file, error));
  if (error) throw std::runtime_error(where + ": cannot read the file (" + error.message() + ")");
  if (size == 0) throw std::runtime_error(where + ": the file is empty");
  if (size % kCifarRecord != 0) {
    std::string hint;
    if (size % kCifar10Record == 0)
      hint = "; its size fits 3073-byte records: is it CIFAR-10 (one label per record)?";
    throw std::runtime_error(where + ": " + std::to_string(size) + " bytes is not a whole number of " +
                             std::to_string(kCifarRecord) + "-byte CIFAR-100 records; the record at offset " +
                             std::to_string(size / kCifarRecord * kCifarRecord) + " is truncated" + hint);
  }
  const int64_t count = size / kCifarRecord;
  auto records = torch::empty({count, kCifarRecord}, torch::kUInt8);
  std::ifstream in(file, std::ios::binary);
  if (!in || !in.read(reinterpret_cast<char*>(records.data_ptr<uint8_t>()), size))
    throw std::runtime_error(where + ": cannot read " + std::to_string(size) + " bytes");

  const uint8_t* data = records.data_ptr<uint8_t>();
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t coarse = data[i * kCifarRecord], fine = data[i * kCifarRecord + 1];
    if (coarse >= kCifarCoarseClasses || fine >= kCifarFineClasses)
      throw std::runtime_error(where + ": record " + std::to_string(i) + " (offset " +
                               std::to_string(i * kCifarRecord) + "): coarse label " + std::to_string(coarse) +
                               ", fine label " + std::to_string(fine) + "; expected [0, 20) and [0, 100)");
  }
  Cifar100 dataset;
  dataset.coarse_labels = records.select(1, 0).to(torch::kInt64);
  dataset.fine_labels = records.select(1, 1).to(torch::kInt64);
  dataset.images = records.slice(1, 2).reshape({count, 3, kCifarSide, kCifarSide}).to(torch::kFloat32).div_(255.0);
  return dataset;
}

torch::Tensor read_idx(const std::filesystem::path& file) {
  bool compressed = false;
  const std::vector<uint8_t> bytes = read_maybe_gzip(file, compressed);
  const std::string where = file.string();
  const std::string contents = compressed ? " decompressed bytes" : " bytes";
  if (bytes.size() < 4)
    throw std::runtime_error(where + ": " + std::to_string(bytes.size()) + contents +
                             "; an IDX file starts with a 4-byte magic number");
  const auto be32 = [&](size_t offset) {
    return (uint32_t{bytes[offset]} << 24) | (uint32_t{bytes[offset + 1]} << 16) |
           (uint32_t{bytes[offset + 2]} << 8) | uint32_t{bytes[offset + 3]};
  };
  if (bytes[0] != 0 || bytes[1] != 0)
    throw std::runtime_error(where + ": magic number " + hex32(be32(0)) +
                             " is not IDX (expected 0x0000TTDD: type TT, DD dimensions)");
  const IdxType type = idx_type(bytes[2], where);
  const size_t dims = bytes[3];
  if (dims == 0) throw std::runtime_error(where + ": offset 3: the IDX header declares 0 dimensions");
  const size_t header = 4 + 4 * dims;
  if (bytes.size() < header)
    throw std::runtime_error(where + ": truncated header: " + std::to_string(dims) + " dimensions need " +
                             std::to_string(header) + " bytes, the file has " + std::to_string(bytes.size()) +
                             contents);
  std::vector<int64_t> shape;
  uint64_t elements = 1;
  // The product of the non-zero extents: with a zero among them the file
  // has no elements, but the tensor's strides are still that product, and
  // LibTorch refuses (naming no file) when it overflows.
  uint64_t strided = 1;
  std::string shape_text;
  constexpr uint64_t kPlausibleElements = uint64_t{1} << 40;
  for (size_t d = 0; d < dims; ++d) {
    const uint32_t extent = be32(4 + 4 * d);
    shape.push_back(extent);
    shape_text += (d ? "x" : "") + std::to_string(extent);
    if (extent != 0 && strided > kPlausibleElements / extent)
      throw std::runtime_error(where + ": dimensions " + shape_text + "... are implausibly large");
    elements *= extent;
    if (extent != 0) strided *= extent;
  }
  const uint64_t data_bytes = elements * type.size;
  const uint64_t available = bytes.size() - header;
  if (available < data_bytes)
    throw std::runtime_error(where + ": truncated: " + shape_text + " " + type.name + " elements need " +
                             std::to_string(data_bytes) + " bytes after the " + std::to_string(header) +
                             "-byte header, the file has " + std::to_string(available) + contents + " there");
  if (available > data_bytes)
    throw std::runtime_error(where + ": " + std::to_string(available - data_bytes) +
                             " unexpected bytes after the " + shape_text + " " + type.name +
                             " elements (offset " + std::to_string(header + data_bytes) + ")");

  auto tensor = torch::empty(shape, type.scalar_type);
  // A dimension of 0 is a valid, empty file; its tensor has no storage
  // (data_ptr() is null), and memcpy to null is undefined even for 0 bytes.
  if (data_bytes == 0) return tensor;
  auto* out = static_cast<uint8_t*>(tensor.data_ptr());
  std::memcpy(out, bytes.data() + header, data_bytes);
  if (type.size > 1 && host_is_little_endian())
    for (uint64_t i = 0; i < data_bytes; i += type.size) std::reverse(out + i, out + i + type.size);
  return tensor;
}

ImageClassification read_mnist_split(const std::filesystem::path& directory, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  const auto images_file = plain_or_gzip(directory, prefix + "-images-idx3-ubyte");
  const auto labels_file = plain_or_gzip(directory, prefix + "-labels-idx1-ubyte");
  torch::Tensor images = read_idx(images_file);
  torch::Tensor labels = read_idx(labels_file);
  if (images.dim() != 3 || images.scalar_type() != torch::kUInt8)
    throw std::runtime_error(images_file.string() + ": expected u8 images [N, H, W], got " +
                             std::to_string(images.dim()) + " dimensions of " +
                             std::string(c10::toString(images.scalar_type())));
  if (labels.dim() != 1 || labels.scalar_type() != torch::kUInt8)
    throw std::runtime_error(labels_file.string() + ": expected u8 labels [N], got " +
                             std::to_string(labels.dim()) + " dimensions of " +
                             std::string(c10::toString(labels.scalar_type())));
  if (images.size(0) != labels.size(0))
    throw std::runtime_error(images_file.string() + " has " + std::to_string(images.size(0)) + " images but " +
                             labels_file.string() + " has " + std::to_string(labels.size(0)) + " labels");
  return {images.unsqueeze(1).to(torch::kFloat32).div_(255.0), labels.to(torch::kInt64)};
}

}  // namespace tram::hf::data
