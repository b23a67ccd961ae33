// The archive check (include/tram/checkpoint.h): a walk over a LibTorch
// archive's pickles that builds nothing and rejects what would make LibTorch
// allocate or read more than the archive holds.
//
// LibTorch's unpickler (LibTorch 2.11) takes three things from the file on
// trust, each found by fuzzing tram's readers (docs/FUZZING.md):
//  - a string's length (BINUNICODE, BINUNICODE8): it allocates that many
//    bytes before it reads them, up to 4 GiB or more from a few bytes;
//  - a memo index (BINPUT, LONG_BINPUT): it grows its memo table to the index,
//    4 billion entries from five bytes;
//  - a storage reference's element count (BINPERSID's tuple): the storage's
//    size is count x element size, but its bytes are the record's, so a
//    count beyond the record makes every later read of the tensor run past
//    the record's buffer.
// The walk follows LibTorch's own reading of each opcode, keeps on its stack
// only what a storage reference is made of (strings, integers, storage
// types, small tuples) and stops where LibTorch would stop with an error of
// its own (an opcode it does not know, data that ends early), since nothing
// after that point is read.
#include <tram/checkpoint.h>
#include <tram/optimizer.h>

#include <caffe2/serialize/file_adapter.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tram {
namespace {

// Deflate's largest ratio of output to input is about 1032:1, so no record can
// hold more than that many times the archive's size.
constexpr uint64_t kMaxDeflateRatio = 1032;

// What the walk keeps of a value on the unpickler's stack.
struct Value {
  enum class Kind { kOther, kString, kInt, kStorageType, kTuple, kDict };
  Kind kind = Kind::kOther;
  std::string text;          // kString
  int64_t number = 0;        // kInt; kStorageType: the element size in bytes
  std::vector<Value> items;  // kTuple: kept when it could be a storage reference
};

// A storage reference is ("storage", <Type>Storage, key, location, numel).
constexpr size_t kStorageReferenceSize = 5;

Value other() { return {}; }

// "FloatStorage" -> 4, ...: the storage types LibTorch's unpickler resolves.
const std::unordered_map<std::string, int64_t>& storage_element_sizes() {
  static const auto sizes = [] {
    std::unordered_map<std::string, int64_t> map;
#define TRAM_STORAGE_SIZE(ctype, name) map.emplace(#name "Storage", static_cast<int64_t>(sizeof(ctype)));
    AT_FORALL_SCALAR_TYPES_WITH_COMPLEX_AND_QINTS(TRAM_STORAGE_SIZE)
#undef TRAM_STORAGE_SIZE
    return map;
  }();
  return sizes;
}

class PickleWalk {
 public:
  // `record_size(name)`: the size of the archive's record `name`, if it has one.
  PickleWalk(std::string_view pickle, std::string where, std::string storage_prefix,
             std::function<std::optional<uint64_t>(const std::string&)> record_size)
      : pickle_(pickle),
        where_(std::move(where)),
        storage_prefix_(std::move(storage_prefix)),
        record_size_(std::move(record_size)) {}

  void run() {
    while (pos_ < pickle_.size()) {
      opcode_at_ = pos_;
      if (!step(static_cast<uint8_t>(pickle_[pos_++]))) return;
    }
  }

 private:
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    TORCH_CHECK(false, where_, ": ", args..., " (opcode at byte ", opcode_at_,
                "); the archive is crafted or damaged, LibTorch would misread it");
  }

  size_t remaining() const { return pickle_.size() - pos_; }

  // A little-endian unsigned argument of `bytes` bytes; nullopt where the data ends.
  std::optional<uint64_t> fixed(size_t bytes) {
    if (remaining() < bytes) return std::nullopt;
    uint64_t value = 0;
    for (size_t i = 0; i < bytes; ++i) value |= uint64_t(uint8_t(pickle_[pos_ + i])) << (8 * i);
    pos_ += bytes;
    return value;
  }

  // `length` bytes of data, which must be there: LibTorch allocates them first.
  std::optional<std::string_view> data(uint64_t length, const char* opcode) {
    if (length > remaining()) {
      fail("the ", opcode, " length ", length, " runs past the end of the pickle (", remaining(),
           " bytes are left)");
    }
    auto bytes = pickle_.substr(pos_, length);
    pos_ += length;
    return bytes;
  }

  // A length-prefixed argument (`width` bytes of length, then the data).
  std::optional<std::string_view> counted(size_t width, const char* opcode) {
    const auto length = fixed(width);
    if (!length) return std::nullopt;
    return data(*length, opcode);
  }

  // A newline-terminated argument. LibTorch's reader of GLOBAL names loops
  // on a name that the data ends inside, so an unterminated one is rejected.
  std::optional<std::string_view> line(const char* opcode) {
    const size_t end = pickle_.find('\n', pos_);
    if (end == std::string_view::npos) fail("the ", opcode, " argument is not terminated by a newline");
    auto text = pickle_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return text;
  }

  void push(Value value) { stack_.push_back(std::move(value)); }
  void pop(size_t count) { stack_.resize(stack_.size() - std::min(count, stack_.size())); }
  // The values above the last MARK, removed from the stack (none without a mark).
  std::vector<Value> pop_to_mark() {
    if (marks_.empty()) return {};
    const size_t start = std::min(marks_.back(), stack_.size());
    marks_.pop_back();
    std::vector<Value> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(start)),
                             std::make_move_iterator(stack_.end()));
    stack_.resize(start);
    return items;
  }
  void push_tuple(std::vector<Value> items) {
    Value tuple;
    // Only a tuple of scalars of the right length can be a storage reference;
    // anything else is kept as "other" so that the walk's memory stays small.
    const bool scalars = std::all_of(items.begin(), items.end(), [](const Value& v) {
      return v.kind != Value::Kind::kTuple && v.kind != Value::Kind::kDict;
    });
    if (items.size() == kStorageReferenceSize && scalars) {
      tuple.kind = Value::Kind::kTuple;
      tuple.items = std::move(items);
    } else if (items.empty()) {
      tuple.kind = Value::Kind::kTuple;
    }
    push(std::move(tuple));
  }
  void memo_put(uint64_t index) {
    // LibTorch's pickler numbers its memo entries 0, 1, 2, ...; LibTorch's
    // unpickler grows its table to any index it is given.
    if (index > memo_.size()) {
      fail("memo index ", index, " skips past the ", memo_.size(), " entries written before it");
    }
    Value top = stack_.empty() ? other() : stack_.back();
    if (index == memo_.size()) {
      memo_.push_back(std::move(top));
    } else {
      memo_[index] = std::move(top);
    }
  }
  void memo_get(uint64_t index) { push(index < memo_.size() ? memo_[index] : other()); }

  void global(std::string_view module, std::string_view name) {
    Value value;
    if (module == "torch") {
      const auto& sizes = storage_element_sizes();
      if (const auto it = sizes.find(std::string(name)); it != sizes.end()) {
        value.kind = Value::Kind::kStorageType;
        value.number = it->second;
      }
    }
    push(std::move(value));
  }

  void persistent_load() {
    const Value reference = stack_.empty() ? other() : std::move(stack_.back());
    pop(1);
    const auto& items = reference.items;
    const bool well_formed = reference.kind == Value::Kind::kTuple && items.size() == kStorageReferenceSize &&
                             items[0].kind == Value::Kind::kString && items[0].text == "storage" &&
                             items[1].kind == Value::Kind::kStorageType && items[2].kind == Value::Kind::kString &&
                             items[3].kind == Value::Kind::kString && items[4].kind == Value::Kind::kInt;
    if (!well_formed) fail("a persistent id that is not a storage reference (\"storage\", type, key, location, size)");
    const std::string& key = items[2].text;
    const int64_t element_size = items[1].number;
    const int64_t numel = items[4].number;
    if (numel < 0) fail("storage '", key, "' has ", numel, " elements");
    if (numel > 0) {
      // LibTorch reads the record only for a storage with elements.
      const std::string record = storage_prefix_ + key;
      const auto size = record_size_(record);
      if (!size) fail("storage '", key, "' is in the record '", record, "', which the archive does not have");
      if (static_cast<uint64_t>(numel) > *size / static_cast<uint64_t>(element_size)) {
        fail("storage '", key, "' claims ", numel, " elements x ", element_size, " bytes, but its record '",
             record, "' holds ", *size, " bytes");
      }
    }
    push(other());  // the tensor
  }

  // One opcode; false where LibTorch stops reading (STOP, or an error of its own).
  bool step(uint8_t opcode) {
    using K = Value::Kind;
    switch (opcode) {
      case 0x80:  // PROTO
        return fixed(1).has_value();
      case '.':  // STOP
        return false;
      // Scalars.
      case 'K': case 'M': case 'J': {  // BININT1, BININT2, BININT
        const size_t width = opcode == 'K' ? 1 : opcode == 'M' ? 2 : 4;
        const auto value = fixed(width);
        if (!value) return false;
        Value v;
        v.kind = K::kInt;
        v.number = width == 4 ? int64_t(int32_t(uint32_t(*value))) : int64_t(*value);
        push(std::move(v));
        return true;
      }
      case 0x8a: {  // LONG1: LibTorch reads only 8-byte ones
        const auto length = fixed(1);
        if (!length) return false;
        if (*length != 8) return false;
        const auto value = fixed(8);
        if (!value) return false;
        Value v;
        v.kind = K::kInt;
        v.number = static_cast<int64_t>(*value);
        push(std::move(v));
        return true;
      }
      case 'G':  // BINFLOAT
        if (!fixed(8)) return false;
        push(other());
        return true;
      case 0x88: case 0x89: case 'N':  // NEWTRUE, NEWFALSE, NONE
        push(other());
        return true;
      case 'X': case 0x8d: case 0x8c: {  // BINUNICODE, BINUNICODE8, SHORT_BINUNICODE
        const char* name = opcode == 'X' ? "BINUNICODE" : opcode == 0x8d ? "BINUNICODE8" : "SHORT_BINUNICODE";
        const auto text = counted(opcode == 'X' ? 4 : opcode == 0x8d ? 8 : 1, name);
        if (!text) return false;
        Value v;
        v.kind = K::kString;
        v.text = std::string(*text);
        push(std::move(v));
        return true;
      }
      // Byte strings LibTorch 2.11 does not read; checked in case a later one does.
      case 'U': case 'C':  // SHORT_BINSTRING, SHORT_BINBYTES
        if (!counted(1, opcode == 'U' ? "SHORT_BINSTRING" : "SHORT_BINBYTES")) return false;
        push(other());
        return true;
      case 'T': case 'B': case 0x8b:  // BINSTRING, BINBYTES, LONG4
        if (!counted(4, opcode == 'T' ? "BINSTRING" : opcode == 'B' ? "BINBYTES" : "LONG4")) return false;
        push(other());
        return true;
      case 0x8e: case 0x96:  // BINBYTES8, BYTEARRAY8
        if (!counted(8, opcode == 0x8e ? "BINBYTES8" : "BYTEARRAY8")) return false;
        push(other());
        return true;
      // Containers.
      case '(':  // MARK
        marks_.push_back(stack_.size());
        return true;
      case ')':  // EMPTY_TUPLE
        push_tuple({});
        return true;
      case 't':  // TUPLE
        push_tuple(pop_to_mark());
        return true;
      case 0x85: case 0x86: case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
        const size_t count = std::min<size_t>(opcode - 0x84, stack_.size());
        std::vector<Value> items(std::make_move_iterator(stack_.end() - static_cast<std::ptrdiff_t>(count)),
                                 std::make_move_iterator(stack_.end()));
        pop(count);
        push_tuple(std::move(items));
        return true;
      }
      case ']':  // EMPTY_LIST
        push(other());
        return true;
      case 'l':  // LIST
        pop_to_mark();
        push(other());
        return true;
      case 'e':  // APPENDS: the list stays below the mark
        pop_to_mark();
        return true;
      case 'a':  // APPEND
        pop(1);
        return true;
      case '}': {  // EMPTY_DICT
        Value v;
        v.kind = K::kDict;
        push(std::move(v));
        return true;
      }
      case 'd': {  // DICT
        pop_to_mark();
        Value v;
        v.kind = K::kDict;
        push(std::move(v));
        return true;
      }
      case 'u':  // SETITEMS
        pop_to_mark();
        return true;
      case 's':  // SETITEM
        pop(2);
        return true;
      // The memo.
      case 'q': case 'r': {  // BINPUT, LONG_BINPUT
        const auto index = fixed(opcode == 'q' ? 1 : 4);
        if (!index) return false;
        memo_put(*index);
        return true;
      }
      case 'h': case 'j': {  // BINGET, LONG_BINGET
        const auto index = fixed(opcode == 'h' ? 1 : 4);
        if (!index) return false;
        memo_get(*index);
        return true;
      }
      // Objects.
      case 'c': {  // GLOBAL
        const auto module = line("GLOBAL");
        const auto name = line("GLOBAL");
        global(*module, *name);
        return true;
      }
      case 0x81:  // NEWOBJ: LibTorch drops the argument tuple
        pop(1);
        return true;
      case 'R': case 'b':  // REDUCE, BUILD: LibTorch treats both as a call
        if (stack_.size() >= 2 && stack_[stack_.size() - 2].kind == K::kDict) {
          pop(1);  // state applied to a dict: LibTorch drops it
        } else {
          pop(2);
          push(other());
        }
        return true;
      case 'Q':  // BINPERSID
        persistent_load();
        return true;
      default:
        // An opcode LibTorch does not read: it stops here with its own error.
        return false;
    }
  }

  std::string_view pickle_;
  std::string where_;
  std::string storage_prefix_;
  std::function<std::optional<uint64_t>(const std::string&)> record_size_;
  size_t pos_ = 0;
  size_t opcode_at_ = 0;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::vector<Value> memo_;
};

bool ends_with(const std::string& text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void check_records(std::shared_ptr<caffe2::serialize::ReadAdapterInterface> adapter, const std::string& name) {
  const uint64_t archive_size = adapter->size();
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(std::move(adapter));
  } catch (const c10::Error& error) {
    TORCH_CHECK(false, name, ": not a readable LibTorch archive: ", error.what_without_backtrace());
  }
  const auto records = reader->getAllRecords();
  // LibTorch allocates a record's size before it reads it.
  for (const auto& record : records) {
    const uint64_t size = reader->getRecordSize(record);
    TORCH_CHECK(size <= archive_size * kMaxDeflateRatio, name, ": the record '", record, "' claims ", size,
                " bytes, more than a ", archive_size, "-byte archive can hold; the archive is crafted or damaged");
  }
  const auto record_size = [&reader](const std::string& record) -> std::optional<uint64_t> {
    if (!reader->hasRecord(record)) return std::nullopt;
    return reader->getRecordSize(record);
  };
  for (const auto& record : records) {
    if (!ends_with(record, ".pkl") && !ends_with(record, ".debug_pkl")) continue;
    auto [bytes, size] = reader->getRecord(record);
    // data.pkl's storages are in data/<key>, constants.pkl's in constants/<key>.
    const std::string stem = record.substr(0, record.rfind('.'));
    PickleWalk walk(std::string_view(static_cast<const char*>(bytes.get()), size), name + ", " + record,
                    stem + "/", record_size);
    walk.run();
  }
}

void check(std::shared_ptr<caffe2::serialize::ReadAdapterInterface> adapter, const std::string& name) {
  try {
    check_records(std::move(adapter), name);
  } catch (const c10::Error& error) {
    // LibTorch's zip reader (a damaged record, say) does not name the archive.
    const std::string message = error.what_without_backtrace();
    if (message.rfind(name, 0) == 0) throw;
    TORCH_CHECK(false, name, ": ", message);
  }
}

// The bytes of an archive held in memory, for PyTorchStreamReader.
class MemoryAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  MemoryAdapter(const void* data, size_t size) : data_(static_cast<const char*>(data)), size_(size) {}
  size_t size() const override { return size_; }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= size_) return 0;
    n = std::min<uint64_t>(n, size_ - pos);
    std::memcpy(buf, data_ + pos, n);
    return n;
  }

 private:
  const char* data_;
  size_t size_;
};

}  // namespace

void check_archive(const std::string& path) {
  std::shared_ptr<caffe2::serialize::ReadAdapterInterface> file;
  try {
    file = std::make_shared<caffe2::serialize::FileAdapter>(path);
  } catch (const c10::Error& error) {
    TORCH_CHECK(false, path, ": cannot be opened: ", error.what_without_backtrace());
  }
  check(std::move(file), path);
}

void check_archive(const void* data, size_t size, const std::string& name) {
  check(std::make_shared<MemoryAdapter>(data, size), name);
}

void load_checkpoint(SharpnessAware& optimizer, const std::string& path) {
  check_archive(path);
  torch::load(optimizer, path);
}

}  // namespace tram
