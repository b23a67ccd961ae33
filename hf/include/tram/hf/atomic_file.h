// Replacing a file so that neither a reader nor a crash ever sees it half
// written: the one way tram::hf (run states, summaries, safetensors) and the
// study (run records) write a file that something later trusts.
//
//   write_text_atomically(out / "summary.json", json.dump(2) + "\n");
//   write_file_atomically(state / "run.pt", [&](const std::filesystem::path& temporary) {
//     archive.save_to(temporary.string());
//   });
//
// `write` fills a temporary file named like `file` plus ".tmp", in a new
// directory of this write's own next to `file` (so the rename stays on one
// filesystem and concurrent writers never share a temporary file); the
// temporary file is then flushed to disk (fsync), renamed over `file`, and
// the directory of `file` is flushed (fsync) so that the rename itself
// survives a power loss. If `write` throws, or any step fails, the temporary
// file and directory are removed, `file` keeps its old contents (or stays
// absent), and the error propagates (a std::runtime_error names the file and
// the failed step).
#pragma once

#include <filesystem>
#include <functional>
#include <string_view>

namespace tram::hf {

void write_file_atomically(const std::filesystem::path& file,
                           const std::function<void(const std::filesystem::path& temporary)>& write);

// write_file_atomically with `text` as the file's bytes.
void write_text_atomically(const std::filesystem::path& file, std::string_view text);

}  // namespace tram::hf
