// The safetensors reader and writer: exact round trips of every supported
// dtype, and every malformed file rejected with a message that names the file
// and the tensor.
#include <tram/hf/safetensors.h>

#include "scratch_directory.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace st = tram::hf::safetensors;

namespace {

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  SafetensorsTest()
      : scratch_("safetensors_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())),
        directory_(scratch_.path()) {}

  std::string path(const std::string& name) const { return (directory_ / name).string(); }

  // Writes a file from raw parts: the 8-byte length (the header's own length
  // unless `declared_length` overrides it), the header text, the data bytes.
  std::string write_raw(const std::string& name, const std::string& header, const std::string& data = "",
                        std::optional<uint64_t> declared_length = std::nullopt) const {
    const std::string file = path(name);
    std::ofstream out(file, std::ios::binary);
    uint64_t length = declared_length.value_or(header.size());
    for (int i = 0; i < 8; ++i, length >>= 8) out.put(char(length & 0xff));
    out << header << data;
    return file;
  }

  tram::hf::testing::ScratchDirectory scratch_;
  fs::path directory_;
};

// Asserts that opening (and reading every tensor of) `file` throws a
// std::runtime_error whose message contains the file name and each of `parts`.
void expect_rejected(const std::string& file, const std::vector<std::string>& parts) {
  try {
    st::File opened(file);
    for (const auto& name : opened.names()) opened.tensor(name);
    ADD_FAILURE() << "expected " << file << " to be rejected";
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(file), std::string::npos) << message;
    for (const auto& part : parts)
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

bool same_bytes(const torch::Tensor& a, const torch::Tensor& b) {
  // An empty tensor's data_ptr() is null, and memcmp on null is undefined
  // even for 0 bytes (UBSan reported it here).
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0);
}

std::map<std::string, torch::Tensor> every_dtype() {
  torch::manual_seed(0);
  const auto special =
      torch::tensor({0.0, -0.0, std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                     std::numeric_limits<double>::quiet_NaN(), 1e-30, 65504.0, -3.5},
                    torch::kDouble);
  std::map<std::string, torch::Tensor> tensors;
  tensors["f64"] = torch::cat({special, torch::randn({9}, torch::kDouble)});
  tensors["f32"] = torch::cat({special.to(torch::kFloat), torch::randn({7})}).view({3, 5});
  tensors["f16"] = torch::cat({special.to(torch::kHalf), torch::randn({4}).to(torch::kHalf)}).view({2, 2, 3});
  tensors["bf16"] = torch::cat({special.to(torch::kBFloat16), torch::randn({5}).to(torch::kBFloat16)});
  tensors["i64"] = torch::tensor(
      {std::numeric_limits<int64_t>::min(), int64_t(-1), int64_t(0), std::numeric_limits<int64_t>::max()});
  tensors["i32"] = torch::randint(-100000, 100000, {3, 3}, torch::kInt);
  tensors["i16"] = torch::randint(-30000, 30000, {5}, torch::kShort);
  tensors["i8"] = torch::randint(-128, 128, {6}, torch::kChar);
  tensors["u8"] = torch::randint(0, 256, {2, 4}, torch::kByte);
  tensors["bool"] = torch::tensor({true, false, true});
  tensors["scalar"] = torch::tensor(2.5f);                       // 0-dim
  tensors["empty"] = torch::empty({0, 3});                       // no bytes
  tensors["transposed"] = torch::arange(12.0).view({3, 4}).t();  // non-contiguous input
  return tensors;
}

}  // namespace

TEST_F(SafetensorsTest, RoundTripsEveryDtypeExactly) {
  const auto tensors = every_dtype();
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "round trip"}};
  st::save(path("all.safetensors"), tensors, metadata);

  st::File file(path("all.safetensors"));
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.names().size(), tensors.size());
  for (const auto& [name, original] : tensors) {
    const torch::Tensor loaded = file.tensor(name);
    EXPECT_TRUE(same_bytes(loaded, original.contiguous())) << name;
  }
  // Every tensor starts at a multiple of its element size, so it can be mapped in place.
  const uint64_t header_length = [&] {
    std::ifstream in(file.path(), std::ios::binary);
    unsigned char bytes[8];
    in.read(reinterpret_cast<char*>(bytes), 8);
    uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
    return value;
  }();
  EXPECT_EQ(header_length % 8, 0u);
  for (const auto& name : file.names()) {
    const auto& info = file.info(name);
    EXPECT_EQ((8 + header_length + info.begin) % c10::elementSize(st::scalar_type_of(info.dtype)), 0u) << name;
  }
  // No temporary file is left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(directory_), fs::directory_iterator()), 1);

  const auto loaded = st::load(path("all.safetensors"));
  EXPECT_EQ(loaded.size(), tensors.size());
}

TEST_F(SafetensorsTest, ReadsFilesWrittenByPython) {
  // Written by Hugging Face's safetensors (tools/make_model_fixtures.py).
  st::File file(std::string(TRAM_HF_FIXTURES) + "/models/bert/io.safetensors");
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.info("input_ids").dtype, "I64");
  EXPECT_EQ(file.tensor("logits").scalar_type(), torch::kFloat);
}

TEST_F(SafetensorsTest, WriterRejectsWhatTheFormatCannotHold) {
  try {
    st::save(path("complex.safetensors"), {{"z", torch::zeros({2}, torch::kComplexFloat)}});
    ADD_FAILURE() << "complex tensors have no safetensors dtype here";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("tensor 'z'"), std::string::npos) << error.what();
  }
  EXPECT_THROW(st::save(path("reserved.safetensors"), {{"__metadata__", torch::zeros({1})}}), std::runtime_error);
  EXPECT_FALSE(fs::exists(path("complex.safetensors")));
}

TEST_F(SafetensorsTest, RejectsTruncatedFiles) {
  const std::string tiny = path("tiny.safetensors");
  std::ofstream(tiny, std::ios::binary) << "abc";
  expect_rejected(tiny, {"truncated", "3 bytes"});

  expect_rejected(write_raw("long_header.safetensors", "{}", "", 4096), {"header length 4096", "truncated"});
  expect_rejected(write_raw("absurd_header.safetensors", "{}", "", uint64_t(1) << 60), {"exceeds the format's limit"});
  // The header promises 16 bytes of data; the file holds 8.
  expect_rejected(write_raw("short_data.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                            std::string(8, '\0')),
                  {"tensor 'w'", "run past the end of the data section (8 bytes)"});
}

TEST_F(SafetensorsTest, RejectsInvalidHeaders) {
  expect_rejected(write_raw("not_json.safetensors", "{\"w\": [", ""), {"not valid JSON"});
  expect_rejected(write_raw("array.safetensors", "[1, 2]", ""), {"not a JSON object"});
  expect_rejected(write_raw("entry.safetensors", R"({"w": 3})", ""), {"tensor 'w'", "not a JSON object"});
  expect_rejected(
      write_raw("no_dtype.safetensors", R"({"w":{"shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')),
      {"tensor 'w'", "\"dtype\""});
  expect_rejected(write_raw("metadata.safetensors", R"({"__metadata__":{"format":1}})", ""),
                  {"__metadata__", "'format'", "not a string"});
}

TEST_F(SafetensorsTest, RejectsUnknownDtypes) {
  expect_rejected(write_raw("dtype.safetensors", R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})",
                            std::string(4, '\0')),
                  {"tensor 'w'", "unsupported dtype 'F8_E4M3'", "BF16"});
}

TEST_F(SafetensorsTest, RejectsBadOffsets) {
  const std::string data(16, '\0');
  expect_rejected(write_raw("negative.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", data),
                  {"tensor 'w'", "data_offsets", "non-negative"});
  expect_rejected(write_raw("reversed.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", data),
                  {"tensor 'w'", "end before they begin"});
  expect_rejected(write_raw("three.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", data),
                  {"tensor 'w'", "[begin, end]"});
  expect_rejected(write_raw("outside.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", data),
                  {"tensor 'w'", "[12, 20]", "run past the end"});
  expect_rejected(
      write_raw(
          "overlap.safetensors",
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
          data),
      {"tensor 'b'", "overlap", "tensor 'a'"});
}

TEST_F(SafetensorsTest, RejectsShapesThatDoNotMatchTheBytes) {
  const std::string data(16, '\0');
  expect_rejected(write_raw("size.safetensors", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data),
                  {"tensor 'w'", "shape [3] of F32 needs 12 bytes", "span 8"});
  expect_rejected(
      write_raw("negative_dim.safetensors", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data),
      {"tensor 'w'", "not a non-negative integer"});
  // 2^32 * 2^32 * 16 elements: the element count overflows 64 bits.
  expect_rejected(write_raw("overflow.safetensors",
                            R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", data),
                  {"tensor 'w'", "more elements than a tensor can hold"});
  // 2^62 elements of 4 bytes: the byte count overflows.
  expect_rejected(write_raw("byte_overflow.safetensors",
                            R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", data),
                  {"tensor 'w'", "more elements than a tensor can hold"});
}

TEST_F(SafetensorsTest, RejectsInvalidBooleans) {
  expect_rejected(write_raw("bool.safetensors", R"({"flags":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                            std::string("\x01\x07", 2)),
                  {"tensor 'flags'", "byte 7"});
}

TEST_F(SafetensorsTest, ReportsMissingTensorsAndFiles) {
  st::save(path("one.safetensors"), {{"a", torch::ones({1})}});
  st::File file(path("one.safetensors"));
  try {
    file.tensor("b");
    ADD_FAILURE() << "no tensor b";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("tensor 'b'"), std::string::npos) << error.what();
  }
  expect_rejected(path("absent.safetensors"), {"cannot open"});
}
