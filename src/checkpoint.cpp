// The archive check (include/tram/checkpoint.h): a walk over a LibTorch
// archive's pickles that builds nothing and rejects what would make LibTorch
// allocate or read more than the archive holds.
//
// LibTorch's unpickler (LibTorch 2.11) takes four things from the file on
// trust, each found by fuzzing tram's readers (docs/FUZZING.md):
//  - a string's length (BINUNICODE, BINUNICODE8): it allocates that many
//    bytes before it reads them, up to 4 GiB or more from a few bytes;
//  - a memo index (BINPUT, LONG_BINPUT): it grows its memo table to the index,
//    4 billion entries from five bytes;
//  - a storage reference's element count (BINPERSID's tuple): the storage's
//    size is count x element size, but its bytes are the record's, so a
//    count beyond the record makes every later read of the tensor run past
//    the record's buffer;
//  - a tensor's storage offset, sizes and strides (_rebuild_tensor_v2's
//    arguments): it sets them on the storage unchecked, so a view that
//    reaches past its storage reads past the buffer as soon as it is used.
// The walk follows LibTorch's own reading of each opcode, keeps on its stack
// only what storage references and tensor views are made of (strings,
// integers, storage types, storages, rebuild functions, tuples of at most
// kMaxKeptTuple values) and stops where LibTorch would stop with an error of
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
  enum class Kind {
    kOther,
    kString,
    kInt,
    kStorageType,  // torch.<Type>Storage
    kStorage,      // what BINPERSID made of a storage reference
    kRebuild,      // torch._utils._rebuild_tensor_v2 or _rebuild_qtensor: makes a view of a storage
    kRebuildFromType,  // torch._tensor._rebuild_from_type_v2: calls a rebuild on its third argument
    kUnchecked,    // a rebuild of tensors the walk cannot check (sparse)
    kTuple,
    kDict,
  };
  Kind kind = Kind::kOther;
  std::string text;    // kString
  int64_t number = 0;  // kInt; kStorageType: the element size in bytes; kStorage: its elements
  // kTuple: shared, so that the memo and the stack copy it cheaply.
  std::shared_ptr<const std::vector<Value>> items;

  size_t size() const { return items ? items->size() : 0; }
  const Value& operator[](size_t i) const { return (*items)[i]; }
};

// A storage reference is ("storage", <Type>Storage, key, location, numel).
constexpr size_t kStorageReferenceSize = 5;
// Tuples longer than this are not kept (a tensor's sizes and strides are
// tuples of its dimensions; a rebuild's arguments hold six or seven values).
constexpr size_t kMaxKeptTuple = 256;

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
    if (items.size() <= kMaxKeptTuple) {
      tuple.kind = Value::Kind::kTuple;
      tuple.items = std::make_shared<const std::vector<Value>>(std::move(items));
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
    // LibTorch's _rebuild_from_type_v2 calls the function of the GLOBAL that
    // follows it in the file, whatever its arguments name: that one must be
    // a rebuild this walk checks.
    if (rebuild_from_type_pending_) {
      rebuild_from_type_pending_ = false;
      if (!(module == "torch._utils" && (name == "_rebuild_tensor_v2" || name == "_rebuild_qtensor"))) {
        fail("_rebuild_from_type_v2 followed by ", module, ".", name, ", not a tensor rebuild this check can verify");
      }
    }
    if (module == "torch._utils" && (name == "_rebuild_tensor_v2" || name == "_rebuild_qtensor")) {
      value.kind = Value::Kind::kRebuild;
    } else if (module == "torch._tensor" && name == "_rebuild_from_type_v2") {
      value.kind = Value::Kind::kRebuildFromType;
      rebuild_from_type_pending_ = true;
    } else if (module == "torch._utils" && name == "_rebuild_sparse_tensor") {
      value.kind = Value::Kind::kUnchecked;
    } else if (module == "torch") {
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
    const Value& items = reference;
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
    Value storage;
    storage.kind = Value::Kind::kStorage;
    storage.number = numel;
    push(std::move(storage));
  }

  // _rebuild_tensor_v2(storage, offset, sizes, strides, ...): the view must
  // lie within the storage (LibTorch sets it without a check).
  void check_view(const Value& args) {
    const auto is_int_tuple = [](const Value& v) {
      if (v.kind != Value::Kind::kTuple) return false;
      for (size_t i = 0; i < v.size(); ++i) {
        if (v[i].kind != Value::Kind::kInt) return false;
      }
      return true;
    };
    if (args.kind != Value::Kind::kTuple || args.size() < 4 || args[0].kind != Value::Kind::kStorage ||
        args[1].kind != Value::Kind::kInt || !is_int_tuple(args[2]) || !is_int_tuple(args[3]) ||
        args[2].size() != args[3].size()) {
      fail("a tensor whose storage, offset, sizes or strides this check cannot read");
    }
    const int64_t storage_elements = args[0].number;
    const int64_t offset = args[1].number;
    const Value& sizes = args[2];
    const Value& strides = args[3];
    if (offset < 0) fail("a tensor with storage offset ", offset);
    for (size_t d = 0; d < sizes.size(); ++d) {
      if (sizes[d].number < 0 || strides[d].number < 0) {
        fail("a tensor with size ", sizes[d].number, " and stride ", strides[d].number, " in dimension ", d);
      }
      if (sizes[d].number == 0) return;  // no element: nothing is read
    }
    // The last element the view reaches must be inside the storage; each
    // term is checked against the room left, so nothing from the file can
    // overflow the sum.
    const auto past = [&] {
      fail("a tensor view (offset ", offset, ", sizes ", ints(sizes), ", strides ", ints(strides),
           ") reaches past the ", storage_elements, " elements of its storage");
    };
    const auto limit = static_cast<uint64_t>(storage_elements);
    auto last = static_cast<uint64_t>(offset);
    if (last >= limit) past();
    for (size_t d = 0; d < sizes.size(); ++d) {
      const auto span = static_cast<uint64_t>(sizes[d].number - 1);
      const auto stride = static_cast<uint64_t>(strides[d].number);
      if (span == 0 || stride == 0) continue;
      if (stride > (limit - 1 - last) / span) past();
      last += span * stride;
    }
  }

  static std::string ints(const Value& tuple) {
    std::string text = "(";
    for (size_t i = 0; i < tuple.size(); ++i) text += (i ? ", " : "") + std::to_string(tuple[i].number);
    return text + ")";
  }

  // REDUCE or BUILD: `function` called on `args` (LibTorch treats both alike).
  void call(const Value& function, const Value& args) {
    switch (function.kind) {
      case Value::Kind::kRebuild:
        check_view(args);
        return;
      case Value::Kind::kRebuildFromType:
        // (rebuild, type, rebuild's arguments, state): LibTorch calls the
        // rebuild that followed it (checked in global()) on the third.
        if (args.kind != Value::Kind::kTuple || args.size() < 3) {
          fail("a _rebuild_from_type_v2 call this check cannot read");
        }
        check_view(args[2]);
        return;
      case Value::Kind::kUnchecked:
        fail("a sparse tensor (this check does not verify sparse indices against their sizes)");
      default:
        return;
    }
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
          if (stack_.size() >= 2) call(stack_[stack_.size() - 2], stack_.back());
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
  bool rebuild_from_type_pending_ = false;
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
