// Plumbing shared by the fuzz harnesses (fuzz/fuzz_*.cpp): each harness
// hands the fuzzer's bytes to one of tram's readers of outside data and
// calls reject_cleanly(), which treats a std::exception as the reader doing
// its job. Anything else is a finding: a crash or a sanitizer report (ASan,
// UBSan, LSan), a hang (-timeout), a huge allocation (-rss_limit_mb,
// -malloc_limit_mb), an exception of another type (it escapes
// LLVMFuzzerTestOneInput and terminates), or a rejection whose message does
// not name the file it is about.
//
// The same sources are built as libFuzzer binaries (TRAM_BUILD_FUZZERS) and,
// in the normal build, with replay_main.cpp as the ctest fuzz.Fuzz* tests
// that run the committed corpus (fuzz/corpus/<harness>/).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace tram::fuzz {

// A directory of this process's own for the files one input is written to.
// Only single files and empty directories are removed
// (std::filesystem::remove, never remove_all, which is not safe to call in
// a process linked with LibTorch: docs/FUZZING.md); the directories stay,
// empty, for the next input and are removed at exit.
inline std::vector<std::filesystem::path>& directories_to_remove() {
  static std::vector<std::filesystem::path> directories;
  return directories;
}

inline const std::filesystem::path& scratch_directory() {
  static const std::filesystem::path directory = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::filesystem::path path = std::filesystem::path(tmp && *tmp ? tmp : "/tmp") /
                                 ("tram-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
    directories_to_remove().push_back(path);
    std::atexit([] {
      auto& directories = directories_to_remove();
      for (auto it = directories.rbegin(); it != directories.rend(); ++it) {
        std::error_code ignored;
        std::filesystem::remove(*it, ignored);
      }
    });
    return path;
  }();
  return directory;
}

// scratch_directory()/name, created on first use and removed at exit.
inline std::filesystem::path scratch_subdirectory(const std::string& name) {
  const std::filesystem::path path = scratch_directory() / name;
  std::filesystem::create_directories(path);
  auto& directories = directories_to_remove();
  if (std::find(directories.begin(), directories.end(), path) == directories.end()) directories.push_back(path);
  return path;
}

// Files written for one input, removed when it is done (readers that take a
// path or a directory get the bytes this way).
class ScratchFiles {
 public:
  ScratchFiles() = default;
  ScratchFiles(const ScratchFiles&) = delete;
  ScratchFiles& operator=(const ScratchFiles&) = delete;
  ~ScratchFiles() {
    for (const auto& file : files_) {
      std::error_code ignored;
      std::filesystem::remove(file, ignored);
    }
  }

  // Writes `bytes` to scratch_directory()/name and returns its path.
  std::filesystem::path write(const std::string& name, std::string_view bytes) {
    const std::filesystem::path file = scratch_directory() / name;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::fprintf(stderr, "fuzz harness: cannot write %s\n", file.c_str());
      std::abort();  // the harness's own failure, not a finding in the reader
    }
    files_.push_back(file);
    return file;
  }

 private:
  std::vector<std::filesystem::path> files_;
};

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// The input cut at every `separator` into at most `parts` pieces (the last
// one keeps any further separators); missing pieces are empty. Harnesses of
// readers that take several files use it: the seeds hold the separator.
inline std::vector<std::string_view> split_input(std::string_view input, size_t parts,
                                                 std::string_view separator = "\n\x1e\n") {
  std::vector<std::string_view> result;
  while (result.size() + 1 < parts) {
    const size_t at = input.find(separator);
    if (at == std::string_view::npos) break;
    result.push_back(input.substr(0, at));
    input.remove_prefix(at + separator.size());
  }
  result.push_back(input);
  result.resize(parts);
  return result;
}

// Runs `read`. A std::exception is a clean rejection, provided its message
// contains `must_name` (the name of the file the reader was given: every
// reader of tram promises to say which file is wrong) when that is not
// empty. Anything else aborts, so that the fuzzer (or the replay test)
// reports the input.
template <typename Read>
void reject_cleanly(Read&& read, const std::string& must_name = "") {
  try {
    read();
  } catch (const std::exception& error) {
    const std::string what = error.what();
    if (!must_name.empty() && what.find(must_name) == std::string::npos) {
      std::fprintf(stderr, "fuzz harness: the reader rejected the input without naming '%s': %s\n",
                   must_name.c_str(), what.c_str());
      std::abort();
    }
  }
}

}  // namespace tram::fuzz
