// Loading checkpoints from files that may be damaged or crafted.
//
// LibTorch's archive reader (torch::load, InputArchive::load_from) trusts
// the pickle inside the zip: a string length or memo index from the file is
// allocated before the data behind it is checked, a tensor's storage takes
// its size from the pickle, not from the record that holds its bytes, and a
// tensor's offset, sizes and strides are set on its storage unchecked, so a
// crafted file makes later reads run past a heap buffer. check_archive walks
// the archive first, without building anything, and rejects what would make
// LibTorch allocate or read more than the archive holds (docs/FUZZING.md,
// "Fixed since: the archive check").
//
//   tram::load_checkpoint(*optimizer, "optimizer.pt");  // instead of torch::load(*optimizer, path)
//
// tram's own readers of archives (the state payload inside an optimizer
// checkpoint, the programs' run state) call it before LibTorch sees the bytes.
#pragma once

#include <cstddef>
#include <string>

namespace tram {

class SharpnessAware;

// Throws c10::Error naming `path` and what is wrong if the LibTorch archive
// there has a record larger than the file could hold, a pickle whose string
// or byte length runs past its end, a memo index beyond the entries written
// before it, a tensor storage that claims more bytes than its record holds,
// or a tensor view that reaches past its storage (sparse tensors, whose
// indices it cannot check, are rejected too).
// Passing it says nothing about the archive's content (LibTorch and the
// reader of the entries check that).
void check_archive(const std::string& path);
// The same for an archive held in memory; `name` is what the message calls it.
void check_archive(const void* data, size_t size, const std::string& name);

// check_archive(path), then torch::load(optimizer, path).
void load_checkpoint(SharpnessAware& optimizer, const std::string& path);

}  // namespace tram
