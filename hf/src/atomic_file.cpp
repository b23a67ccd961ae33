#include <tram/hf/atomic_file.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tram::hf {

namespace fs = std::filesystem;

namespace {

std::runtime_error failure(const fs::path& path, const std::string& step, int error) {
  return std::runtime_error(path.string() + ": " + step + ": " + std::strerror(error));
}

// fsync works on any descriptor of the file: the data of every writer of it
// reaches the disk, so a read-only descriptor is enough (and is all a
// directory allows).
void sync_to_disk(const fs::path& path, int flags) {
  const int descriptor = ::open(path.c_str(), flags | O_CLOEXEC);
  if (descriptor < 0) throw failure(path, "cannot open to flush it to disk", errno);
  const int status = ::fsync(descriptor);
  const int error = errno;
  ::close(descriptor);
  if (status != 0) throw failure(path, "cannot flush to disk (fsync)", error);
}

// A new, empty directory next to `file`, of this write alone (mkdtemp).
fs::path make_private_directory(const fs::path& directory, const fs::path& file) {
  std::string pattern = (directory / ("." + file.filename().string() + ".XXXXXX")).string();
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  if (::mkdtemp(name.data()) == nullptr) throw failure(file, "cannot create a temporary directory next to it", errno);
  return fs::path(name.data());
}

}  // namespace

void write_file_atomically(const fs::path& file, const std::function<void(const fs::path& temporary)>& write) {
  const fs::path directory = file.has_parent_path() ? file.parent_path() : fs::path(".");
  // The temporary file is `file`'s name plus ".tmp", in a directory of this
  // write's own: concurrent writers of one file never share a temporary
  // file, and a writer that records the name it writes to (LibTorch's
  // archives name their root folder after the file, less its extension)
  // writes the same bytes as it would into `file` itself.
  const fs::path own = make_private_directory(directory, file);
  const fs::path temporary = own / (file.filename().string() + ".tmp");
  // std::remove and std::rename, not std::filesystem: the LibTorch wheel's
  // libtorch.so exports its own copies of some std::filesystem functions.
  try {
    write(temporary);
    sync_to_disk(temporary, O_RDONLY);
    if (std::rename(temporary.c_str(), file.c_str()) != 0) {
      throw failure(file, "cannot move the written file into place", errno);
    }
  } catch (...) {
    std::remove(temporary.c_str());
    std::remove(own.c_str());
    throw;
  }
  std::remove(own.c_str());
  sync_to_disk(directory, O_RDONLY | O_DIRECTORY);
}

void write_text_atomically(const fs::path& file, std::string_view text) {
  write_file_atomically(file, [&](const fs::path& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) throw failure(temporary, "cannot create", errno);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.close();
    if (!out) throw failure(temporary, "write failed", errno);
  });
}

}  // namespace tram::hf
