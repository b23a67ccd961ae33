// write_file_atomically / write_text_atomically: the new contents replace the
// old ones whole, nothing is left behind, and a failed write changes nothing.
#include "scratch_directory.h"

#include <tram/hf/atomic_file.h>

#include <gtest/gtest.h>


#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using tram::hf::testing::directory_entries;
using tram::hf::write_file_atomically;
using tram::hf::write_text_atomically;

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(AtomicFile, ReplacesTheContentsAndLeavesNothingBehind) {
  tram::hf::testing::ScratchDirectory scratch("atomic_replace");
  const fs::path file = scratch.path() / "summary.json";
  write_text_atomically(file, "first, and longer than the second\n");
  EXPECT_EQ(read_text(file), "first, and longer than the second\n");
  write_text_atomically(file, std::string("sec\0ond\n", 8));  // bytes, not a C string
  EXPECT_EQ(read_text(file), std::string("sec\0ond\n", 8));
  EXPECT_EQ(directory_entries(scratch.path()), std::vector<std::string>{"summary.json"});
}

TEST(AtomicFile, TheWriterGetsATemporaryFileNamedLikeTheFile) {
  tram::hf::testing::ScratchDirectory scratch("atomic_writer");
  const fs::path file = scratch.path() / "run.pt";
  fs::path seen;
  write_file_atomically(file, [&](const fs::path& temporary) {
    seen = temporary;
    EXPECT_FALSE(fs::exists(file)) << "the final name appears only once the file is complete";
    std::ofstream(temporary, std::ios::binary) << "state";
  });
  // "run.pt.tmp": LibTorch's archives name their root folder after the file
  // less its extension, so an archive written there is the one `file` gets.
  EXPECT_EQ(seen.filename(), "run.pt.tmp");
  // Next to the file (the rename stays on its filesystem), in a directory of
  // its own that is gone afterwards.
  EXPECT_EQ(seen.parent_path().parent_path(), file.parent_path());
  EXPECT_EQ(read_text(file), "state");
  EXPECT_EQ(directory_entries(scratch.path()), std::vector<std::string>{"run.pt"});

  // Two writes in flight at once get different temporary files.
  write_file_atomically(file, [&](const fs::path& outer) {
    write_file_atomically(file, [&](const fs::path& inner) {
      EXPECT_NE(inner, outer);
      std::ofstream(inner, std::ios::binary) << "inner";
    });
    std::ofstream(outer, std::ios::binary) << "outer";
  });
  EXPECT_EQ(read_text(file), "outer");  // the last rename wins, whole
  EXPECT_EQ(directory_entries(scratch.path()), std::vector<std::string>{"run.pt"});
}

TEST(AtomicFile, AFailedWriteKeepsTheOldFile) {
  tram::hf::testing::ScratchDirectory scratch("atomic_failure");
  const fs::path file = scratch.path() / "record.json";
  write_text_atomically(file, "old");
  EXPECT_THROW(write_file_atomically(file,
                                     [](const fs::path& temporary) {
                                       std::ofstream(temporary, std::ios::binary) << "half";
                                       throw std::runtime_error("interrupted");
                                     }),
               std::runtime_error);
  EXPECT_EQ(read_text(file), "old");
  EXPECT_EQ(directory_entries(scratch.path()), std::vector<std::string>{"record.json"});

  // A writer that writes nothing is a failure too, named by the file.
  try {
    write_file_atomically(file, [](const fs::path&) {});
    ADD_FAILURE() << "a writer that creates no file must fail";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("record.json"), std::string::npos) << error.what();
  }
  EXPECT_EQ(read_text(file), "old");

  // A directory that does not exist: the error names the file.
  try {
    write_text_atomically(scratch.path() / "absent" / "x.json", "text");
    ADD_FAILURE() << "writing into a missing directory must fail";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("x.json"), std::string::npos) << error.what();
  }
}

}  // namespace
