// Data readers of the examples on small files written here (and on Debian's
// Fashion-MNIST when it is installed): shapes, values, determinism, and
// malformed input rejected with messages that name the file.
#include <tram/hf/data/image_datasets.h>
#include <tram/hf/data/lm_text.h>
#include <tram/hf/data/nli.h>
#include <tram/hf/data/split.h>
#include <tram/hf/data/text_labels.h>
#include <tram/hf/tokenizers/gpt2_bpe.h>

#include "scratch_directory.h"

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <set>

namespace {

namespace fs = std::filesystem;
using namespace tram::hf::data;
using Bytes = std::vector<uint8_t>;

// The shared scratch directory, with `dir / "name"` for brevity.
struct ScratchDir : tram::hf::testing::ScratchDirectory {
  explicit ScratchDir(const std::string& tag) : ScratchDirectory("data_" + tag) {}
  fs::path operator/(const std::string& name) const { return path() / name; }
};

void write_bytes(const fs::path& path, const Bytes& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
}

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

void write_gzip(const fs::path& path, const Bytes& bytes) {
  gzFile out = gzopen(path.string().c_str(), "wb");
  ASSERT_NE(out, nullptr);
  ASSERT_EQ(gzwrite(out, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(out);
}

Bytes read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

#define EXPECT_ERROR_MENTIONS(statement, ...)                                        \
  do {                                                                               \
    const std::string message_ = error_of([&] { statement; });                       \
    for (const std::string& part_ : std::vector<std::string>{__VA_ARGS__})           \
      EXPECT_NE(message_.find(part_), std::string::npos) << "\"" << part_ << "\" not in: " << message_; \
  } while (0)

// --- CIFAR-100 -------------------------------------------------------------------

// Record i: coarse label i, fine label 10 * i, pixel p = (i + p) mod 256.
Bytes cifar_records(int count) {
  Bytes bytes;
  for (int i = 0; i < count; ++i) {
    bytes.push_back(static_cast<uint8_t>(i));
    bytes.push_back(static_cast<uint8_t>(10 * i));
    for (int p = 0; p < 3072; ++p) bytes.push_back(static_cast<uint8_t>((i + p) % 256));
  }
  return bytes;
}

TEST(DataCifar100, ReadsRecordsInChannelMajorOrder) {
  ScratchDir dir("cifar");
  write_bytes(dir / "test.bin", cifar_records(3));
  const Cifar100 data = read_cifar100(dir / "test.bin");
  ASSERT_EQ(data.images.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_EQ(data.images.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(data.coarse_labels, torch::tensor({0, 1, 2}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(data.fine_labels, torch::tensor({0, 10, 20}, torch::kInt64)));
  // Record 2, green channel (plane 1), row 3, column 5: pixel 1024 + 3 * 32 + 5.
  const int p = 1024 + 3 * 32 + 5;
  EXPECT_FLOAT_EQ(data.images[2][1][3][5].item<float>(), static_cast<float>((2 + p) % 256) / 255.0f);
  EXPECT_GE(data.images.min().item<float>(), 0.0f);
  EXPECT_LE(data.images.max().item<float>(), 1.0f);
}

TEST(DataCifar100, RejectsTruncatedAndInvalidFiles) {
  ScratchDir dir("cifar_bad");
  Bytes bytes = cifar_records(3);
  bytes.resize(bytes.size() - 5);
  write_bytes(dir / "train.bin", bytes);
  EXPECT_ERROR_MENTIONS(read_cifar100(dir / "train.bin"), (dir / "train.bin").string(), "truncated",
                        "offset 6148");

  bytes = cifar_records(3);
  bytes[3074 + 1] = 100;  // record 1's fine label
  write_bytes(dir / "train.bin", bytes);
  EXPECT_ERROR_MENTIONS(read_cifar100(dir / "train.bin"), "train.bin", "record 1", "offset 3074");

  write_bytes(dir / "cifar10.bin", Bytes(3 * 3073 * 2, 0));  // 6 CIFAR-10-sized records
  EXPECT_ERROR_MENTIONS(read_cifar100(dir / "cifar10.bin"), "cifar10.bin", "CIFAR-10");
  write_bytes(dir / "empty.bin", {});
  EXPECT_ERROR_MENTIONS(read_cifar100(dir / "empty.bin"), "empty.bin", "empty");
  EXPECT_ERROR_MENTIONS(read_cifar100(dir / "missing.bin"), "missing.bin");
}

// --- IDX -------------------------------------------------------------------------

Bytes idx_header(uint8_t type, const std::vector<uint32_t>& dims) {
  Bytes bytes = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(d >> shift));
  return bytes;
}

TEST(DataIdx, ReadsPlainAndGzipFiles) {
  ScratchDir dir("idx");
  Bytes images = idx_header(0x08, {2, 3, 4});
  for (int i = 0; i < 24; ++i) images.push_back(static_cast<uint8_t>(i * 10));
  write_bytes(dir / "images-idx3-ubyte", images);
  write_gzip(dir / "images-idx3-ubyte.gz", images);
  for (const char* name : {"images-idx3-ubyte", "images-idx3-ubyte.gz"}) {
    const torch::Tensor t = read_idx(dir / name);
    EXPECT_EQ(t.scalar_type(), torch::kUInt8) << name;
    ASSERT_EQ(t.sizes(), (std::vector<int64_t>{2, 3, 4})) << name;
    EXPECT_EQ(t[1][2][3].item<int64_t>(), 230) << name;
  }
  // Multi-byte elements are big-endian in the file.
  Bytes ints = idx_header(0x0C, {2});
  for (uint8_t b : {0x00, 0x00, 0x01, 0x02, 0xFF, 0xFF, 0xFF, 0xFE}) ints.push_back(b);
  write_bytes(dir / "ints-idx1", ints);
  EXPECT_TRUE(torch::equal(read_idx(dir / "ints-idx1"), torch::tensor({258, -2}, torch::kInt32)));
}

// A dimension of 0 (an empty data set) is a valid file. Its tensor has no
// storage: copying the (no) elements into it was a memcpy to a null pointer,
// which UBSan reports (fuzz/corpus/idx/regression-zero-extent).
TEST(DataIdx, ReadsFilesWithAZeroDimension) {
  ScratchDir dir("idx_empty");
  write_bytes(dir / "empty-idx3-ubyte", idx_header(0x08, {0, 0, 0}));
  write_bytes(dir / "empty-idx2", idx_header(0x0D, {5, 0}));
  const torch::Tensor images = read_idx(dir / "empty-idx3-ubyte");
  EXPECT_EQ(images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(images.sizes(), (std::vector<int64_t>{0, 0, 0}));
  const torch::Tensor floats = read_idx(dir / "empty-idx2");
  EXPECT_EQ(floats.scalar_type(), torch::kFloat32);
  EXPECT_EQ(floats.sizes(), (std::vector<int64_t>{5, 0}));
  // Still no trailing bytes allowed.
  Bytes trailing = idx_header(0x08, {0});
  trailing.push_back(7);
  write_bytes(dir / "trailing-idx1", trailing);
  EXPECT_ERROR_MENTIONS(read_idx(dir / "trailing-idx1"), "trailing-idx1", "unexpected bytes");
  // No elements, but strides beyond int64: rejected naming the file, not by
  // LibTorch's "Stride calculation overflowed" (found by fuzz_idx,
  // fuzz/corpus/idx/regression-zero-extent-huge-strides).
  write_bytes(dir / "strides-idx4", idx_header(0x08, {0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}));
  EXPECT_ERROR_MENTIONS(read_idx(dir / "strides-idx4"), "strides-idx4", "implausibly large");
}

TEST(DataIdx, RejectsMalformedFilesNamingThem) {
  ScratchDir dir("idx_bad");
  Bytes labels = idx_header(0x08, {10});
  for (int i = 0; i < 10; ++i) labels.push_back(static_cast<uint8_t>(i));

  Bytes truncated(labels.begin(), labels.end() - 3);
  write_bytes(dir / "short-idx1-ubyte", truncated);
  EXPECT_ERROR_MENTIONS(read_idx(dir / "short-idx1-ubyte"), "short-idx1-ubyte", "truncated", "10 u8");

  Bytes trailing = labels;
  trailing.push_back(0);
  write_bytes(dir / "long-idx1-ubyte", trailing);
  EXPECT_ERROR_MENTIONS(read_idx(dir / "long-idx1-ubyte"), "long-idx1-ubyte", "1 unexpected bytes", "offset 18");

  write_bytes(dir / "magic-idx1-ubyte", {0x1F, 0x00, 0x08, 0x01, 0, 0, 0, 0});
  EXPECT_ERROR_MENTIONS(read_idx(dir / "magic-idx1-ubyte"), "magic-idx1-ubyte", "0x1F000801");

  write_bytes(dir / "type-idx1-ubyte", {0x00, 0x00, 0x07, 0x01, 0, 0, 0, 0});
  EXPECT_ERROR_MENTIONS(read_idx(dir / "type-idx1-ubyte"), "type-idx1-ubyte", "element type 7");

  // A gzip file cut short, and one with damaged compressed data.
  Bytes big = idx_header(0x08, {4096});
  for (int i = 0; i < 4096; ++i) big.push_back(static_cast<uint8_t>((i * 7919) % 251));
  write_gzip(dir / "whole.gz", big);
  const Bytes gz = read_bytes(dir / "whole.gz");
  write_bytes(dir / "cut.gz", Bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)));
  EXPECT_ERROR_MENTIONS(read_idx(dir / "cut.gz"), "cut.gz", "gzip");
  Bytes damaged = gz;
  for (size_t i = 20; i < 40 && i < damaged.size(); ++i) damaged[i] ^= 0x5A;
  write_bytes(dir / "damaged.gz", damaged);
  EXPECT_ERROR_MENTIONS(read_idx(dir / "damaged.gz"), "damaged.gz");
  EXPECT_ERROR_MENTIONS(read_idx(dir / "absent"), "absent", "cannot open");
}

TEST(DataIdx, MnistLayoutDirectory) {
  ScratchDir dir("mnist");
  Bytes images = idx_header(0x08, {3, 28, 28});
  for (int i = 0; i < 3 * 28 * 28; ++i) images.push_back(static_cast<uint8_t>(i % 256));
  Bytes labels = idx_header(0x08, {3});
  for (uint8_t l : {7, 0, 9}) labels.push_back(l);
  write_gzip(dir / "t10k-images-idx3-ubyte.gz", images);
  write_bytes(dir / "t10k-labels-idx1-ubyte", labels);
  const ImageClassification test = read_mnist_split(dir.path(), /*train=*/false);
  ASSERT_EQ(test.images.sizes(), (std::vector<int64_t>{3, 1, 28, 28}));
  EXPECT_TRUE(torch::equal(test.labels, torch::tensor({7, 0, 9}, torch::kInt64)));
  EXPECT_FLOAT_EQ(test.images[0][0][9][3].item<float>(), 1.0f);  // pixel 255 = row 9, column 3
  EXPECT_ERROR_MENTIONS(read_mnist_split(dir.path(), /*train=*/true), "train-images-idx3-ubyte");

  labels = idx_header(0x08, {2});
  labels.push_back(1);
  labels.push_back(2);
  write_bytes(dir / "t10k-labels-idx1-ubyte", labels);
  EXPECT_ERROR_MENTIONS(read_mnist_split(dir.path(), false), "3 images", "2 labels");
}

TEST(DataFashionMnist, DebianPackageFiles) {
  if (!fs::exists(fs::path(kDebianFashionMnistDirectory) / "train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed (" << kDebianFashionMnistDirectory << ")";
  for (bool train : {true, false}) {
    const ImageClassification split = read_mnist_split(kDebianFashionMnistDirectory, train);
    const int64_t n = train ? 60000 : 10000;
    ASSERT_EQ(split.images.sizes(), (std::vector<int64_t>{n, 1, 28, 28}));
    ASSERT_EQ(split.labels.sizes(), (std::vector<int64_t>{n}));
    EXPECT_EQ(split.labels.min().item<int64_t>(), 0);
    EXPECT_EQ(split.labels.max().item<int64_t>(), 9);
    // Fashion-MNIST is balanced: every class has a tenth of the examples.
    EXPECT_TRUE(torch::equal(torch::bincount(split.labels), torch::full({10}, n / 10, torch::kInt64)));
    EXPECT_GE(split.images.min().item<float>(), 0.0f);
    EXPECT_LE(split.images.max().item<float>(), 1.0f);
  }
}

// --- Splits ----------------------------------------------------------------------

TEST(DataSplit, DeterministicPortablePermutation) {
  const std::vector<int64_t> p = permutation(10, 42);
  EXPECT_EQ(p, permutation(10, 42));
  EXPECT_NE(p, permutation(10, 43));
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  // Pinned: the same indices on every platform (no implementation-defined std:: randomness).
  EXPECT_EQ(p, (std::vector<int64_t>{0, 9, 5, 8, 6, 4, 7, 2, 1, 3}));
}

TEST(DataSplit, DisjointAndComplete) {
  for (int64_t n : {1, 2, 10, 1001}) {
    const Split split = split_indices(n, 0.1, 7);
    std::set<int64_t> all(split.train.begin(), split.train.end());
    for (int64_t i : split.validation) EXPECT_TRUE(all.insert(i).second) << "index " << i << " on both sides";
    EXPECT_EQ(static_cast<int64_t>(all.size()), n);
    EXPECT_EQ(*all.rbegin(), n - 1);
    EXPECT_GE(split.validation.size(), 1u);
    EXPECT_TRUE(std::is_sorted(split.train.begin(), split.train.end()));
  }
  EXPECT_EQ(split_indices(1001, 0.1, 7).validation.size(), 100u);
  EXPECT_EQ(split_indices(10, 0.0, 7).validation.size(), 0u);
  EXPECT_THROW(split_indices(10, 1.5, 7), std::invalid_argument);
}

// --- Language-model text -----------------------------------------------------------

const tram::hf::tokenizers::Gpt2Tokenizer& gpt2() {
  static const auto tokenizer =
      tram::hf::tokenizers::Gpt2Tokenizer::from_directory(fs::path(TRAM_HF_FIXTURES) / "tokenizers/gpt2");
  return *tokenizer;
}

TEST(DataLmText, ReadsDocumentsInAFixedOrder) {
  ScratchDir dir("lm");
  write_text(dir / "b.txt", "First paragraph,\r\ntwo lines.\n\n\n  \nSecond paragraph.\n");
  write_text(dir / "a.txt", "Alpha.\n");
  write_text(dir / "sub/c.txt", "Gamma.");
  write_text(dir / ".hidden", "never read");
  write_text(dir / "empty.txt", "\n\n");

  const auto files = read_documents(dir.path(), DocumentBoundary::kFile);
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].text, "Alpha.");
  EXPECT_EQ(files[1].text, "First paragraph,\ntwo lines.\n\n\n  \nSecond paragraph.");
  EXPECT_EQ(files[2].text, "Gamma.");
  EXPECT_NE(files[2].source.find("c.txt"), std::string::npos);

  const auto paragraphs = read_documents(dir.path(), DocumentBoundary::kBlankLine);
  ASSERT_EQ(paragraphs.size(), 4u);
  EXPECT_EQ(paragraphs[1].text, "First paragraph,\ntwo lines.");
  EXPECT_EQ(paragraphs[2].text, "Second paragraph.");
  EXPECT_NE(paragraphs[2].source.find("b.txt:6"), std::string::npos) << paragraphs[2].source;

  EXPECT_EQ(read_documents(dir / "b.txt", DocumentBoundary::kLine).size(), 3u);
  EXPECT_ERROR_MENTIONS(read_documents(dir / "nope"), "nope");
  EXPECT_ERROR_MENTIONS(read_documents(dir / "empty.txt"), "empty.txt", "no text");
}

TEST(DataLmText, PacksBlocksWithEosBetweenDocuments) {
  const std::vector<Document> docs = {{"Hello there.", "x"}, {"Über alles!", "y"}, {"Third one here", "z"}};
  const std::vector<int64_t> tokens = tokenize_documents(gpt2(), docs);
  const int64_t eos = gpt2().special_tokens().eos;
  std::vector<int64_t> expected;
  for (const Document& d : docs) {
    const auto ids = gpt2().encode(d.text);
    expected.insert(expected.end(), ids.begin(), ids.end());
    expected.push_back(eos);
  }
  EXPECT_EQ(tokens, expected);
  EXPECT_EQ(std::count(tokens.begin(), tokens.end(), eos), 3);

  const torch::Tensor blocks = pack_blocks(tokens, 4);
  ASSERT_EQ(blocks.sizes(), (std::vector<int64_t>{static_cast<int64_t>(tokens.size()) / 4, 4}));
  EXPECT_TRUE(torch::equal(blocks.flatten(), torch::tensor(tokens).slice(0, 0, blocks.numel())));
  EXPECT_EQ(pack_blocks(tokens, 1000).size(0), 0);
  EXPECT_THROW(pack_blocks(tokens, 0), std::invalid_argument);
}

TEST(DataLmText, DocumentSplitIsDeterministicAndDisjoint) {
  ScratchDir dir("lm_split");
  std::string text;
  for (int i = 0; i < 40; ++i) text += "Paragraph number " + std::to_string(i) + " says something.\n\n";
  write_text(dir / "corpus.txt", text);
  LmDatasetOptions options;
  options.block_size = 16;
  options.boundary = DocumentBoundary::kBlankLine;
  options.validation_fraction = 0.25;
  options.seed = 3;
  const LmDataset a = load_lm_dataset(dir / "corpus.txt", gpt2(), options);
  const LmDataset b = load_lm_dataset(dir / "corpus.txt", gpt2(), options);
  EXPECT_TRUE(torch::equal(a.train, b.train));
  EXPECT_TRUE(torch::equal(a.validation, b.validation));
  EXPECT_EQ(a.train_documents, 30);
  EXPECT_EQ(a.validation_documents, 10);
  EXPECT_EQ(a.train.size(1), 16);
  EXPECT_GT(a.validation.size(0), 0);

  // The sides hold different paragraphs: their numbers never meet.
  const auto docs = read_documents(dir / "corpus.txt", DocumentBoundary::kBlankLine);
  const Split split = split_indices(40, 0.25, 3);
  const auto train_tokens = tokenize_documents(gpt2(), select(docs, split.train));
  EXPECT_TRUE(torch::equal(a.train.flatten(), torch::tensor(train_tokens).slice(0, 0, a.train.numel())));
  const std::string validation_text = gpt2().decode(
      std::vector<int64_t>(a.validation.data_ptr<int64_t>(), a.validation.data_ptr<int64_t>() + a.validation.numel()));
  for (int64_t i : split.train)
    EXPECT_EQ(validation_text.find("number " + std::to_string(i) + " "), std::string::npos) << i;

  options.seed = 4;
  EXPECT_FALSE(torch::equal(load_lm_dataset(dir / "corpus.txt", gpt2(), options).validation, a.validation));
  options.boundary = DocumentBoundary::kFile;
  EXPECT_ERROR_MENTIONS(load_lm_dataset(dir / "corpus.txt", gpt2(), options), "corpus.txt", "kBlankLine");
  options.boundary = DocumentBoundary::kBlankLine;
  options.block_size = 100000;
  EXPECT_ERROR_MENTIONS(load_lm_dataset(dir / "corpus.txt", gpt2(), options), "block_size");
}

// --- NLI -----------------------------------------------------------------------------

TEST(DataNli, ReadsMultiNliStyleTsv) {
  ScratchDir dir("nli");
  write_text(dir / "dev.tsv",
             "gold_label\tsentence1_parse\tsentence1\tsentence2\tpairID\r\n"
             "neutral\t(x)\tA man sleeps.\tA man dreams.\t1\r\n"
             "-\t(x)\tNo consensus.\tNone.\t2\r\n"
             "\r\n"
             "contradiction\t(x)\tIt is day.\tIt is night.\t3\r\n");
  const auto examples = read_nli(dir / "dev.tsv");
  ASSERT_EQ(examples.size(), 2u);
  EXPECT_EQ(examples[0].premise, "A man sleeps.");
  EXPECT_EQ(examples[0].hypothesis, "A man dreams.");
  EXPECT_EQ(examples[0].label, kNeutral);
  EXPECT_EQ(examples[1].label, kContradiction);
  EXPECT_NE(examples[1].source.find("dev.tsv:5"), std::string::npos) << examples[1].source;
  NliReadOptions strict;
  strict.skip_unlabeled = false;
  EXPECT_ERROR_MENTIONS(read_nli(dir / "dev.tsv", strict), "dev.tsv:3", "no gold label");
}

TEST(DataNli, XnliLanguageColumnAndTranslatedTrainHeader) {
  ScratchDir dir("xnli");
  write_text(dir / "xnli.test.tsv",
             "language\tgold_label\tsentence1\tsentence2\n"
             "de\tentailment\tDer Hund läuft.\tEin Tier bewegt sich.\n"
             "fr\tneutral\tLe chien court.\tIl fait beau.\n");
  NliReadOptions german;
  german.language = "de";
  const auto de = read_nli(dir / "xnli.test.tsv", german);
  ASSERT_EQ(de.size(), 1u);
  EXPECT_EQ(de[0].premise, "Der Hund läuft.");
  EXPECT_EQ(de[0].label, kEntailment);
  EXPECT_EQ(read_nli(dir / "xnli.test.tsv").size(), 2u);

  write_text(dir / "multinli.train.de.tsv", "premise\thypo\tlabel\nA\tB\tcontradictory\n");
  EXPECT_EQ(read_nli(dir / "multinli.train.de.tsv").at(0).label, kContradiction);
}

TEST(DataNli, ReadsJsonLines) {
  ScratchDir dir("nli_json");
  write_text(dir / "train.jsonl",
             "{\"premise\": \"P1\", \"hypothesis\": \"H1\", \"label\": 0}\n"
             "\n"
             "{\"sentence1\": \"P2\", \"sentence2\": \"H2\", \"gold_label\": \"neutral\"}\n"
             "{\"premise\": \"P3\", \"hypothesis\": \"H3\", \"label\": -1}\n"
             "{\"premise\": \"Zwölf\", \"hypothesis\": \"H4\", \"label\": 2}\n");
  const auto examples = read_nli(dir / "train.jsonl");
  ASSERT_EQ(examples.size(), 3u);
  EXPECT_EQ(examples[0].label, kEntailment);
  EXPECT_EQ(examples[1].premise, "P2");
  EXPECT_EQ(examples[1].label, kNeutral);
  EXPECT_EQ(examples[2].premise, "Zwölf");
  EXPECT_EQ(examples[2].label, kContradiction);
}

TEST(DataNli, RejectsUnknownLabelsAndBadRowsWithFileAndLine) {
  ScratchDir dir("nli_bad");
  write_text(dir / "bad.tsv", "premise\thypothesis\tlabel\nA\tB\tentailment\nC\tD\tmaybe\n");
  EXPECT_ERROR_MENTIONS(read_nli(dir / "bad.tsv"), "bad.tsv:3", "unknown label \"maybe\"", "entailment");
  write_text(dir / "short.tsv", "premise\thypothesis\tlabel\nA\tB\n");
  EXPECT_ERROR_MENTIONS(read_nli(dir / "short.tsv"), "short.tsv:2", "2 tab-separated fields");
  write_text(dir / "header.tsv", "text\tlabel\nA\tneutral\n");
  EXPECT_ERROR_MENTIONS(read_nli(dir / "header.tsv"), "header.tsv:1", "premise");
  write_text(dir / "bad.jsonl", "{\"premise\": \"A\", \"hypothesis\": \"B\", \"label\": 5}\n");
  EXPECT_ERROR_MENTIONS(read_nli(dir / "bad.jsonl"), "bad.jsonl:1", "\"5\"");
  write_text(dir / "nofield.jsonl", "{\"premise\": \"A\", \"label\": 1}\n");
  EXPECT_ERROR_MENTIONS(read_nli(dir / "nofield.jsonl"), "nofield.jsonl:1", "hypothesis");
  write_text(dir / "broken.jsonl", "{\"premise\": \n");
  EXPECT_ERROR_MENTIONS(read_nli(dir / "broken.jsonl"), "broken.jsonl:1");
  write_text(dir / "data.csv", "premise,hypothesis,label\n");
  EXPECT_ERROR_MENTIONS(read_nli(dir / "data.csv"), "data.csv", ".tsv");
  EXPECT_EQ(nli_label_id("neutral"), 1);
  EXPECT_STREQ(nli_label_name(2), "contradiction");
  EXPECT_THROW(nli_label_id("Entailment"), std::invalid_argument);
}

// --- text<TAB>label --------------------------------------------------------------------

TEST(DataTextLabels, ReadsIdsAndNamesWithFileAndLine) {
  ScratchDir dir("text_labels");
  write_text(dir / "ids.tsv", "good film\t1\r\n\nbad film\t0\n");
  EXPECT_TRUE(is_text_label_file(dir / "ids.tsv"));
  const auto rows = read_text_labels(dir / "ids.tsv");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].text, "bad film");
  EXPECT_NE(rows[1].source.find("ids.tsv:3"), std::string::npos) << rows[1].source;
  EXPECT_TRUE(label_names(rows).empty());
  EXPECT_EQ(label_ids(rows, {}), (std::vector<int64_t>{1, 0}));

  write_text(dir / "names.tsv", "a\tpositive\nb\tnegative\nc\tpositive\n");
  const auto named = read_text_labels(dir / "names.tsv");
  const auto names = label_names(named);
  EXPECT_EQ(label_ids(named, names), (std::vector<int64_t>{1, 0, 1}));
  write_text(dir / "eval.tsv", "d\tneutral\n");
  EXPECT_ERROR_MENTIONS(label_ids(read_text_labels(dir / "eval.tsv"), names), "eval.tsv:1", "not in the training data");

  write_text(dir / "three.tsv", "a\tb\tc\n");
  EXPECT_FALSE(is_text_label_file(dir / "three.tsv"));
  EXPECT_ERROR_MENTIONS(read_text_labels(dir / "three.tsv"), "three.tsv:1", "text<TAB>label");
  write_text(dir / "empty.tsv", "\n\n");
  EXPECT_ERROR_MENTIONS(is_text_label_file(dir / "empty.tsv"), "empty.tsv", "empty");
}

// An id of 20 digits used to escape as std::out_of_range("stoll") without
// the file or line, and one just below 2^63 made the classifier's label
// count (max id + 1) overflow.
TEST(DataTextLabels, RejectsLabelIdsBeyondTheLimitNamingFileAndLine) {
  ScratchDir dir("text_labels_big");
  for (const std::string& id : std::vector<std::string>{"99999999999999999999", "9223372036854775807",
                                                         std::to_string(kMaxLabels)}) {
    SCOPED_TRACE(id);
    write_text(dir / "big.tsv", "fine\t0\ntext\t" + id + "\n");
    EXPECT_ERROR_MENTIONS(label_ids(read_text_labels(dir / "big.tsv"), {}), "big.tsv:2", "is not below");
  }
  write_text(dir / "edge.tsv", "text\t" + std::to_string(kMaxLabels - 1) + "\n");
  EXPECT_EQ(label_ids(read_text_labels(dir / "edge.tsv"), {}), (std::vector<int64_t>{kMaxLabels - 1}));
}

}  // namespace
