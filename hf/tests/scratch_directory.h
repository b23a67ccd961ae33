// A temporary directory for one test, removed with everything in it.
//
// Removal uses POSIX nftw, not std::filesystem::remove_all: the LibTorch 2.11
// wheel's libtorch.so exports its own copies of several std::filesystem
// functions (remove_all, copy, ...), which shadow libstdc++'s, and its
// remove_all calls an unresolved weak symbol (recursive_directory_iterator)
// and crashes.
#pragma once

#include <dirent.h>
#include <ftw.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace tram::hf::testing {

class ScratchDirectory {
 public:
  explicit ScratchDirectory(const std::string& tag)
      : path_(std::filesystem::temp_directory_path() / ("tram_" + tag + "_" + std::to_string(::getpid()))) {
    remove_tree();
    std::filesystem::create_directories(path_);
  }
  ~ScratchDirectory() { remove_tree(); }
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  void remove_tree() const {
    constexpr int kOpenDescriptors = 16;
    ::nftw(
        path_.c_str(), [](const char* entry, const struct stat*, int, struct FTW*) { return std::remove(entry); },
        kOpenDescriptors, FTW_DEPTH | FTW_PHYS);
  }

  std::filesystem::path path_;
};

// The names in `directory`, sorted (POSIX readdir, for the same reason).
inline std::vector<std::string> directory_entries(const std::filesystem::path& directory) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return names;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace tram::hf::testing
