// tram::check_archive: the walk over a LibTorch archive that rejects what
// LibTorch's reader would allocate or read beyond the archive (string
// lengths, memo indices, storages larger than their records), and passes
// every archive LibTorch and tram write.
#include <tram/tram.h>

#include "checkpoints/fixtures.h"
#include "test_util.h"

#include <caffe2/serialize/inline_container.h>

#include <dirent.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace std::string_literals;
using tram::test::Problem;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A zip archive in LibTorch's format holding `records` (name -> bytes).
std::string archive_of(const std::map<std::string, std::string>& records) {
  std::string bytes;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&bytes](const void* data, size_t size) {
      bytes.append(static_cast<const char*>(data), size);
      return size;
    });
    for (const auto& [name, content] : records) writer.writeRecord(name, content.data(), content.size());
    writer.writeEndOfFile();
  }
  return bytes;
}

// The records of an archive, less those PyTorchStreamWriter writes itself.
std::map<std::string, std::string> records_of(const std::string& archive) {
  std::istringstream in(archive);
  caffe2::serialize::PyTorchStreamReader reader(&in);
  std::map<std::string, std::string> records;
  for (const auto& name : reader.getAllRecords()) {
    if (name == "version" || name == ".data/version" || name == ".data/serialization_id") continue;
    auto [data, size] = reader.getRecord(name);
    records[name] = std::string(static_cast<const char*>(data.get()), size);
  }
  return records;
}

// The message check_archive gives for `archive` ("" if it passes).
std::string check_error(const std::string& archive) {
  try {
    tram::check_archive(archive.data(), archive.size(), "test.pt");
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

std::string le(uint64_t value, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  return out;
}
std::string unicode(const std::string& text) { return "X" + le(text.size(), 4) + text; }

// A pickle (protocol 2) of one storage reference: ("storage", FloatStorage, "0", "cpu", numel).
std::string storage_pickle(uint32_t numel) {
  return std::string("\x80\x02", 2) + "(" + unicode("storage") + "ctorch\nFloatStorage\n" + unicode("0") +
         unicode("cpu") + "J" + le(numel, 4) + "tQ.";
}

// A pickle of one tensor: _rebuild_tensor_v2(storage of 4 floats, offset, sizes, strides, False, None).
std::string view_pickle(uint32_t offset, const std::vector<uint32_t>& sizes, const std::vector<uint32_t>& strides) {
  std::string ints_sizes = "(", ints_strides = "(";
  for (auto v : sizes) ints_sizes += "J" + le(v, 4);
  for (auto v : strides) ints_strides += "J" + le(v, 4);
  const std::string storage = storage_pickle(4).substr(2);  // without PROTO
  return std::string("\x80\x02", 2) + "ctorch._utils\n_rebuild_tensor_v2\n" + "(" +
         storage.substr(0, storage.size() - 1) /* without STOP */ + "J" + le(offset, 4) + ints_sizes + "t" +
         ints_strides + "t" + "\x89" + "N" + "tR.";
}

std::string view_error(uint32_t offset, const std::vector<uint32_t>& sizes, const std::vector<uint32_t>& strides) {
  return check_error(archive_of({{"data.pkl", view_pickle(offset, sizes, strides)}, {"data/0", std::string(16, '\0')}}));
}

TEST(ArchiveCheck, TensorViewsWithinTheirStoragePass) {
  EXPECT_EQ(view_error(0, {2, 2}, {2, 1}), "");  // the whole storage
  EXPECT_EQ(view_error(3, {1}, {1}), "");        // its last element
  EXPECT_EQ(view_error(0, {2, 2}, {0, 1}), "");  // a broadcast view
  EXPECT_EQ(view_error(9, {0, 5}, {1, 1}), "");  // no element: nothing is read
  EXPECT_EQ(view_error(1, {3}, {1}), "");        // the last three elements
}

TEST(ArchiveCheck, TensorViewReachingPastItsStorageIsRejected) {
  const auto error = view_error(0, {2, 2}, {3, 1});
  EXPECT_TRUE(contains(error, "test.pt, data.pkl: a tensor view (offset 0, sizes (2, 2), strides (3, 1)) reaches "
                              "past the 4 elements of its storage"))
      << error;
  EXPECT_NE(view_error(1, {2, 2}, {2, 1}), "");
  EXPECT_NE(view_error(4, {1}, {1}), "");
  // Sizes and strides whose products overflow 64 bits are rejected, not wrapped around.
  EXPECT_NE(view_error(0, {0x7FFFFFFFu, 0x7FFFFFFFu, 3}, {0x7FFFFFFFu, 0x7FFFFFFFu, 0x7FFFFFFFu}), "");
}

TEST(ArchiveCheck, TensorRebuildsTheCheckCannotReadAreRejected) {
  // The rebuild called on something that is not (storage, offset, sizes, strides, ...).
  const std::string pickle = std::string("\x80\x02", 2) + "ctorch._utils\n_rebuild_tensor_v2\n" + "(K\x00tR."s;
  const auto error = check_error(archive_of({{"data.pkl", pickle}}));
  EXPECT_TRUE(contains(error, "a tensor whose storage, offset, sizes or strides this check cannot read")) << error;
  // Sparse tensors: their indices are not checked against their sizes.
  const std::string sparse = std::string("\x80\x02", 2) + "ctorch._utils\n_rebuild_sparse_tensor\n" + ")R.";
  EXPECT_TRUE(contains(check_error(archive_of({{"data.pkl", sparse}})), "a sparse tensor"));
}

TEST(ArchiveCheck, PassesEveryCommittedFixtureAndAFreshCheckpoint) {
  const std::string directory = std::string(TRAM_SOURCE_DIR) + "/tests/checkpoints/v2/";
  DIR* dir = opendir(directory.c_str());
  ASSERT_NE(dir, nullptr) << directory;
  int checked = 0;
  while (const dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (name.size() < 3 || name.compare(name.size() - 3, 3, ".pt") != 0) continue;
    EXPECT_NO_THROW(tram::check_archive(directory + name)) << name;
    ++checked;
  }
  closedir(dir);
  EXPECT_EQ(checked, 2 * static_cast<int>(tram::test::checkpoint_fixture_methods().size()));

  Problem problem;
  auto optimizer = tram::make_optimizer("tram-prev", problem.params(), tram::parse_options("base=adam,lr=0.01"));
  optimizer->step(problem.forward_closure());
  std::ostringstream out;
  torch::save(*optimizer, out);
  EXPECT_EQ(check_error(out.str()), "");
}

TEST(ArchiveCheck, StorageWithinItsRecordPasses) {
  EXPECT_EQ(check_error(archive_of({{"data.pkl", storage_pickle(4)}, {"data/0", std::string(16, '\0')}})), "");
  // No elements: LibTorch reads no record, so none is needed.
  EXPECT_EQ(check_error(archive_of({{"data.pkl", storage_pickle(0)}})), "");
}

TEST(ArchiveCheck, StorageClaimingMoreThanItsRecordIsRejected) {
  const auto error = check_error(archive_of({{"data.pkl", storage_pickle(1000)}, {"data/0", std::string(16, '\0')}}));
  EXPECT_TRUE(contains(error, "test.pt, data.pkl: storage '0' claims 1000 elements x 4 bytes")) << error;
  EXPECT_TRUE(contains(error, "its record 'data/0' holds 16 bytes")) << error;
  // One element too many is as bad as a thousand.
  EXPECT_NE(check_error(archive_of({{"data.pkl", storage_pickle(5)}, {"data/0", std::string(16, '\0')}})), "");
}

TEST(ArchiveCheck, StorageWithoutItsRecordIsRejected) {
  const auto error = check_error(archive_of({{"data.pkl", storage_pickle(4)}}));
  EXPECT_TRUE(contains(error, "is in the record 'data/0', which the archive does not have")) << error;
}

TEST(ArchiveCheck, StringLongerThanThePickleIsRejected) {
  const std::string pickle = std::string("\x80\x02", 2) + "X" + le(0xFB000000u, 4) + "abc.";
  const auto error = check_error(archive_of({{"data.pkl", pickle}}));
  EXPECT_TRUE(contains(error, "the BINUNICODE length 4211081216 runs past the end of the pickle (4 bytes are left)"))
      << error;
  const std::string pickle8 = std::string("\x80\x02\x8d", 3) + le(~uint64_t(0), 8) + ".";
  EXPECT_TRUE(contains(check_error(archive_of({{"data.pkl", pickle8}})), "BINUNICODE8 length"));
}

TEST(ArchiveCheck, MemoIndexBeyondTheEntriesWrittenIsRejected) {
  const std::string pickle = std::string("\x80\x02", 2) + "N" + "r" + le(0xF0000000u, 4) + ".";
  const auto error = check_error(archive_of({{"constants.pkl", pickle}}));
  EXPECT_TRUE(contains(error, "test.pt, constants.pkl: memo index 4026531840 skips past the 0 entries")) << error;
  // Entries numbered in order, and overwritten, pass.
  const std::string ordered = "\x80\x02Nq\x00Nq\x01Nq\x00h\x01."s;
  ASSERT_EQ(ordered.size(), 14u);
  EXPECT_EQ(check_error(archive_of({{"constants.pkl", ordered}})), "");
  // ... and an index one past them is the first that is rejected.
  EXPECT_TRUE(contains(check_error(archive_of({{"constants.pkl", "\x80\x02Nq\x00Nq\x02."s}})),
                       "memo index 2 skips past the 1 entries"));
}

TEST(ArchiveCheck, UnterminatedGlobalNameIsRejected) {
  const std::string pickle = std::string("\x80\x02", 2) + "ctorch\nFloatStorage";
  const auto error = check_error(archive_of({{"data.pkl", pickle}}));
  EXPECT_TRUE(contains(error, "the GLOBAL argument is not terminated by a newline")) << error;
}

TEST(ArchiveCheck, NotAnArchiveIsRejectedWithItsName) {
  const auto error = check_error("not a zip file at all");
  EXPECT_TRUE(contains(error, "test.pt: not a readable LibTorch archive")) << error;
}

// The finding of docs/FUZZING.md: a checkpoint whose state payload's storage
// claims more bytes than its record. Without the check, LibTorch rebuilds the
// payload tensor over the record's smaller buffer and the checksum reads past
// it; with it, the file is rejected before LibTorch reads it.
TEST(ArchiveCheck, CheckpointWithAnInflatedPayloadIsRejectedByLoadCheckpoint) {
  Problem problem;
  const auto options = tram::parse_options("base=adam,lr=0.01");
  auto optimizer = tram::make_optimizer("sam", problem.params(), options);
  optimizer->step(problem.forward_closure());
  std::ostringstream out;
  torch::save(*optimizer, out);
  auto records = records_of(out.str());

  // The payload is the archive's largest storage; its element count ends its
  // storage reference: an integer opcode, then TUPLE and BINPERSID.
  std::string& pickle = records.at("data.pkl");
  size_t largest = 0;
  for (const auto& [name, bytes] : records) {
    if (name.rfind("data/", 0) == 0) largest = std::max(largest, bytes.size());
  }
  ASSERT_GT(largest, 1000u);
  const std::string count = largest < 65536 ? "M" + le(largest, 2) : "J" + le(largest, 4);
  const size_t at = pickle.find(count + "tQ");
  ASSERT_NE(at, std::string::npos);
  pickle.replace(at, count.size(), "J" + le(4 * largest, 4));
  const std::string crafted = archive_of(records);

  char path_template[] = "/tmp/tram-archive-check-XXXXXX";
  const int fd = mkstemp(path_template);
  ASSERT_GE(fd, 0);
  close(fd);
  const std::string path = path_template;
  std::ofstream(path, std::ios::binary) << crafted;

  auto fresh = tram::make_optimizer("sam", problem.params(), options);
  std::string error;
  try {
    tram::load_checkpoint(*fresh, path);
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  }
  unlink(path.c_str());
  EXPECT_TRUE(contains(error, path + ", data.pkl: storage '")) << error;
  EXPECT_TRUE(contains(error, "claims " + std::to_string(4 * largest) + " elements x 1 bytes")) << error;
  EXPECT_EQ(fresh->step_count(), 0);

  // The unaltered archive, rewritten the same way, loads.
  const std::string rewritten = archive_of(records_of(out.str()));
  EXPECT_EQ(check_error(rewritten), "");
  std::istringstream in(rewritten);
  torch::load(*fresh, in);
  EXPECT_EQ(fresh->step_count(), 1);
}

}  // namespace
