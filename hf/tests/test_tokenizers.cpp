// Parity of the C++ tokenizers with their Hugging Face references, on the
// fixtures tools/make_tokenizer_fixtures.py wrote: tokenizers trained on the
// text of Debian's fortunes packages, and the reference ids of held-out
// fortunes plus a few synthetic lines (emoji, CJK, odd whitespace, controls).
#include <tram/hf/tokenizers/batch.h>
#include <tram/hf/tokenizers/gpt2_bpe.h>
#include <tram/hf/tokenizers/unicode.h>
#include <tram/hf/tokenizers/wordpiece.h>
#include <tram/hf/tokenizers/xlmr_sentencepiece.h>

#include "scratch_directory.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

namespace {

namespace fs = std::filesystem;
using namespace tram::hf::tokenizers;
using Ids = std::vector<int64_t>;
using tram::hf::testing::ScratchDirectory;

const fs::path kFixtures = fs::path(TRAM_HF_FIXTURES) / "tokenizers";

const nlohmann::json& expected() {
  static const nlohmann::json json = [] {
    std::ifstream in(kFixtures / "expected.json");
    if (!in) throw std::runtime_error((kFixtures / "expected.json").string() + ": missing");
    return nlohmann::json::parse(in);
  }();
  return json;
}

const Gpt2Tokenizer& gpt2() {
  static const auto tokenizer = Gpt2Tokenizer::from_directory(kFixtures / "gpt2");
  return *tokenizer;
}

const WordPieceTokenizer& bert(bool lowercase) {
  static const WordPieceTokenizer uncased(kFixtures / "bert" / "vocab.txt");
  static const WordPieceTokenizer cased(kFixtures / "bert" / "vocab.txt", [] {
    WordPieceOptions options;
    options.lowercase = false;
    return options;
  }());
  return lowercase ? uncased : cased;
}

const XlmrTokenizer& xlmr() {
  static const XlmrTokenizer tokenizer(kFixtures / "xlmr" / "sentencepiece.bpe.model");
  return tokenizer;
}

// Every fixture case through `encode`, compared with the field `key`.
void expect_reference_ids(const Tokenizer& tokenizer, const std::string& key) {
  const auto& cases = expected().at("cases");
  ASSERT_GE(cases.size(), 40u);
  for (const auto& c : cases) {
    const std::string text = c.at("text");
    EXPECT_EQ(tokenizer.encode(text), c.at(key).get<Ids>())
        << tokenizer.name() << " on " << c.at("source") << " (" << c.at("why") << "): " << text;
  }
}


void write(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
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

// --- Unicode -----------------------------------------------------------------

TEST(TokenizerUnicode, DecodesAndRepairsUtf8) {
  EXPECT_EQ(unicode::to_utf32("aä€😀"), (std::u32string{U'a', 0xE4, 0x20AC, 0x1F600}));
  EXPECT_EQ(unicode::to_utf8(unicode::to_utf32("aä€😀")), "aä€😀");
  // Overlong, surrogate, truncated and stray bytes are each one U+FFFD per maximal subpart.
  EXPECT_EQ(unicode::repair_utf8("a\xC0\xAF" "b"), "a\xEF\xBF\xBD\xEF\xBF\xBD" "b");
  EXPECT_EQ(unicode::repair_utf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(unicode::repair_utf8("x\xE2\x82"), "x\xEF\xBF\xBD");
  EXPECT_EQ(unicode::repair_utf8("\x80z"), "\xEF\xBF\xBDz");
}

TEST(TokenizerUnicode, ClassesAndMappings) {
  using namespace unicode;
  EXPECT_TRUE(char_class(U'ß') & kLetter);
  EXPECT_TRUE(char_class(0x0663) & kNumber);  // ARABIC-INDIC DIGIT THREE
  EXPECT_TRUE(char_class(0x3000) & kSpace);
  EXPECT_TRUE(char_class(0x0085) & kSpace);         // whitespace to the GPT-2 regex...
  EXPECT_TRUE(char_class(0x0085) & kBertControl);   // ...a control character to BERT's cleaner
  EXPECT_TRUE(char_class(U'中') & kCjk);
  EXPECT_TRUE(char_class(U'¿') & kBertPunctuation);
  EXPECT_TRUE(char_class(U'$') & kBertPunctuation);  // ASCII symbols count as punctuation
  std::u32string out;
  append_strip_accents(U'Å', out);
  append_strip_accents(0x0301, out);  // a lone combining acute disappears
  append_strip_accents(U'한', out);   // Hangul -> jamo
  EXPECT_EQ(out, (std::u32string{U'A', 0x1112, 0x1161, 0x11AB}));
  out.clear();
  append_lowercase(U'İ', out);
  append_lowercase(U'Σ', out);
  EXPECT_EQ(out, (std::u32string{U'i', 0x0307, U'σ'}));
}

// --- GPT-2 byte-level BPE ------------------------------------------------------

TEST(TokenizerGpt2, PreTokenizerFollowsTheRegex) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(Gpt2Tokenizer::pre_tokenize("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(Gpt2Tokenizer::pre_tokenize("it's we'll 'S"), (V{"it", "'s", " we", "'ll", " '", "S"}));
  EXPECT_EQ(Gpt2Tokenizer::pre_tokenize("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(Gpt2Tokenizer::pre_tokenize("x\t\ty"), (V{"x", "\t", "\t", "y"}));
  EXPECT_EQ(Gpt2Tokenizer::pre_tokenize("year 2024!!! ok  "), (V{"year", " 2024", "!!!", " ok", "  "}));
  EXPECT_EQ(Gpt2Tokenizer::pre_tokenize(" über\n\nx"), (V{" über", "\n", "\n", "x"}));
  EXPECT_EQ(Gpt2Tokenizer::pre_tokenize("3.5x"), (V{"3", ".", "5", "x"}));
  EXPECT_TRUE(Gpt2Tokenizer::pre_tokenize("").empty());
}

TEST(TokenizerGpt2, MatchesReferenceIds) { expect_reference_ids(gpt2(), "gpt2"); }

TEST(TokenizerGpt2, DecodeRoundTrips) {
  for (const auto& c : expected().at("cases")) {
    const std::string text = c.at("text");
    EXPECT_EQ(gpt2().decode(gpt2().encode(text)), text) << c.at("source");
  }
  // A slice ending inside a multi-byte character decodes to U+FFFD, as the reference.
  Ids ids = gpt2().encode("😀");
  ASSERT_GT(ids.size(), 1u);
  ids.pop_back();
  EXPECT_EQ(gpt2().decode(ids), "\xEF\xBF\xBD");
}

TEST(TokenizerGpt2, SpecialTokens) {
  const auto& specials = expected().at("specials").at("gpt2");
  EXPECT_EQ(gpt2().vocab_size(), specials.at("vocab_size").get<int64_t>());
  EXPECT_EQ(gpt2().special_tokens().eos, specials.at("eos").get<int64_t>());
  EXPECT_EQ(gpt2().special_tokens().bos, gpt2().special_tokens().eos);
  EXPECT_EQ(gpt2().special_tokens().pad, -1);
  EXPECT_EQ(gpt2().token_to_id("<|endoftext|>"), gpt2().special_tokens().eos);
  // Text never turns into the special token.
  EXPECT_NE(gpt2().encode("<|endoftext|>"), Ids{gpt2().special_tokens().eos});
  const int64_t eos = gpt2().special_tokens().eos;
  EXPECT_EQ(gpt2().decode({eos}), "<|endoftext|>");
  Ids with_eos = gpt2().encode("a b");
  with_eos.push_back(eos);
  EXPECT_EQ(gpt2().decode(with_eos, /*skip_special_tokens=*/true), "a b");
  EXPECT_THROW(gpt2().decode({gpt2().vocab_size()}), std::out_of_range);
}

TEST(TokenizerGpt2, RejectsBrokenFilesNamingThem) {
  const ScratchDirectory scratch("tokenizer_gpt2");
  const fs::path& dir = scratch.path();
  {
    std::ifstream vocab(kFixtures / "gpt2" / "vocab.json", std::ios::binary);
    write(dir / "vocab.json", std::string(std::istreambuf_iterator<char>(vocab), {}));
  }
  write(dir / "merges.txt", "#version: 0.2\nĠ t\nq zzzz\n");
  const std::string message = error_of([&] { Gpt2Tokenizer::from_directory(dir); });
  EXPECT_NE(message.find("merges.txt:3"), std::string::npos) << message;
  EXPECT_NE(message.find("zzzz"), std::string::npos) << message;

  write(dir / "merges.txt", "#version: 0.2\nonly-one-token\n");
  EXPECT_NE(error_of([&] { Gpt2Tokenizer::from_directory(dir); }).find("merges.txt:2"), std::string::npos);

  write(dir / "vocab.json", "{\"a\": 0, ");
  EXPECT_NE(error_of([&] { Gpt2Tokenizer::from_directory(dir); }).find("vocab.json"), std::string::npos);
  write(dir / "vocab.json", "{\"a\": 0}");
  EXPECT_NE(error_of([&] { Gpt2Tokenizer::from_directory(dir); }).find("all 256"), std::string::npos);
}

// An id far beyond the vocabulary sized the id table by it: {"a": 1e11}
// asked for terabytes (fuzz/corpus/gpt2_bpe/regression-huge-id).
TEST(TokenizerGpt2, RejectsIdsBeyondTheVocabularyNamingTheFile) {
  const ScratchDirectory scratch("tokenizer_gpt2_ids");
  const fs::path& dir = scratch.path();
  write(dir / "merges.txt", "#version: 0.2\n");
  for (const std::string vocab : {"{\"a\": 100000000000}", "{\"a\": 0, \"b\": 2}"}) {
    SCOPED_TRACE(vocab);
    write(dir / "vocab.json", vocab);
    const std::string message = error_of([&] { Gpt2Tokenizer::from_directory(dir); });
    EXPECT_NE(message.find("vocab.json"), std::string::npos) << message;
    EXPECT_NE(message.find("is beyond the"), std::string::npos) << message;
  }
}

// --- BERT WordPiece ------------------------------------------------------------

TEST(TokenizerWordPiece, MatchesReferenceIdsUncased) { expect_reference_ids(bert(true), "bert_uncased"); }

// The uncased vocabulary without lower-casing: exercises the path that keeps case and accents.
TEST(TokenizerWordPiece, MatchesReferenceIdsCased) { expect_reference_ids(bert(false), "bert_cased"); }

TEST(TokenizerWordPiece, BasicTokenizer) {
  using V = std::vector<std::string>;
  EXPECT_EQ(bert(true).basic_tokenize(" Héllo,  WORLD!\t中文 x\x07y "),
            (V{"hello", ",", "world", "!", "中", "文", "xy"}));
  EXPECT_EQ(bert(false).basic_tokenize("Héllo"), (V{"Héllo"}));
}

TEST(TokenizerWordPiece, LongWordsAndUnknownPiecesBecomeUnk) {
  const int64_t unk = bert(true).special_tokens().unk;
  EXPECT_EQ(bert(true).encode(std::string(101, 'a')), Ids{unk});
  EXPECT_NE(bert(true).encode(std::string(100, 'a')), Ids{unk});
  EXPECT_EQ(bert(true).encode("☃"), Ids{unk});  // no piece for the character at all
}

TEST(TokenizerWordPiece, PairsWithTokenTypes) {
  for (const auto& pair : expected().at("pairs")) {
    const Encoding encoding = bert(true).encode_for_model(pair.at("a").get<std::string>(), pair.at("b").get<std::string>());
    EXPECT_EQ(encoding.ids, pair.at("bert_uncased").at("ids").get<Ids>()) << pair.at("a");
    EXPECT_EQ(encoding.type_ids, pair.at("bert_uncased").at("type_ids").get<Ids>()) << pair.at("a");
  }
  const auto& specials = expected().at("specials").at("bert");
  const SpecialTokens& s = bert(true).special_tokens();
  EXPECT_EQ(s.cls, specials.at("cls").get<int64_t>());
  EXPECT_EQ(s.sep, specials.at("sep").get<int64_t>());
  EXPECT_EQ(s.pad, specials.at("pad").get<int64_t>());
  EXPECT_EQ(s.unk, specials.at("unk").get<int64_t>());
  EXPECT_EQ(s.mask, specials.at("mask").get<int64_t>());
  EXPECT_EQ(bert(true).vocab_size(), specials.at("vocab_size").get<int64_t>());
  EXPECT_EQ(bert(true).decode(bert(true).encode_for_model("the cat").ids, true), "the cat");
}

TEST(TokenizerWordPiece, RejectsVocabularyWithoutSpecials) {
  const ScratchDirectory scratch("tokenizer_bert");
  const fs::path& dir = scratch.path();
  write(dir / "vocab.txt", "[PAD]\n[UNK]\nhello\n");
  const std::string message = error_of([&] { WordPieceTokenizer(dir / "vocab.txt"); });
  EXPECT_NE(message.find("vocab.txt"), std::string::npos) << message;
  EXPECT_NE(message.find("[CLS]"), std::string::npos) << message;
}

// --- XLM-R SentencePiece -------------------------------------------------------

TEST(TokenizerXlmr, MatchesReferenceIds) { expect_reference_ids(xlmr(), "xlmr"); }

TEST(TokenizerXlmr, FairseqLayoutAndSpecials) {
  const auto& specials = expected().at("specials").at("xlmr");
  const SpecialTokens& s = xlmr().special_tokens();
  EXPECT_EQ(s.bos, 0);
  EXPECT_EQ(s.pad, 1);
  EXPECT_EQ(s.eos, 2);
  EXPECT_EQ(s.unk, 3);
  EXPECT_EQ(s.bos, specials.at("bos").get<int64_t>());
  EXPECT_EQ(s.mask, specials.at("mask").get<int64_t>());
  EXPECT_EQ(xlmr().vocab_size(), specials.at("vocab_size").get<int64_t>());
  EXPECT_EQ(s.mask, xlmr().vocab_size() - 1);  // <mask> is last
  EXPECT_EQ(xlmr().id_to_token(0), "<s>");
  EXPECT_EQ(xlmr().id_to_token(3), "<unk>");
  EXPECT_EQ(xlmr().id_to_token(s.mask), "<mask>");
  EXPECT_EQ(xlmr().token_to_id("<pad>"), 1);
  EXPECT_EQ(xlmr().token_to_id("<mask>"), s.mask);
  EXPECT_FALSE(xlmr().token_to_id("no such piece").has_value());
  const int64_t some_piece = xlmr().encode("the").front();
  EXPECT_EQ(xlmr().token_to_id(xlmr().id_to_token(some_piece)), some_piece);
}

TEST(TokenizerXlmr, PairsAndDecode) {
  for (const auto& pair : expected().at("pairs")) {
    const Encoding encoding = xlmr().encode_for_model(pair.at("a").get<std::string>(), pair.at("b").get<std::string>());
    EXPECT_EQ(encoding.ids, pair.at("xlmr").at("ids").get<Ids>()) << pair.at("a");
    EXPECT_EQ(encoding.type_ids, Ids(encoding.ids.size(), 0));
  }
  const std::string text = "Der Hund schläft im Garten.";
  const Encoding single = xlmr().encode_for_model(text);
  EXPECT_EQ(single.ids.front(), 0);
  EXPECT_EQ(single.ids.back(), 2);
  EXPECT_EQ(xlmr().decode(single.ids, true), text);
  EXPECT_EQ(xlmr().decode(single.ids), "<s>" + text + "</s>");
}

TEST(TokenizerXlmr, RejectsAFileThatIsNotAModel) {
  const ScratchDirectory scratch("tokenizer_xlmr");
  const fs::path& dir = scratch.path();
  write(dir / "sentencepiece.bpe.model", "not a protobuf");
  const std::string message = error_of([&] { XlmrTokenizer(dir / "sentencepiece.bpe.model"); });
  EXPECT_NE(message.find("sentencepiece.bpe.model"), std::string::npos) << message;
}

// A model (found by fuzz_sentencepiece, fixtures/tokenizers/malformed/)
// that libsentencepiece does not reject by status: its trie builder throws
// "failed to insert key: zero-length key", which escaped naming no file.
TEST(TokenizerXlmr, RejectsAModelLibsentencepieceThrowsOnNamingTheFile) {
  const fs::path model = kFixtures / "malformed" / "empty-piece.model";
  ASSERT_TRUE(fs::exists(model)) << model;
  const std::string message = error_of([&] { XlmrTokenizer{model}; });
  EXPECT_NE(message.find("empty-piece.model"), std::string::npos) << message;
  EXPECT_NE(message.find("libsentencepiece cannot load this model"), std::string::npos) << message;
}

// --- Loading and batching ------------------------------------------------------

TEST(TokenizerLoad, RecognisesEachDirectory) {
  EXPECT_EQ(load_tokenizer(kFixtures / "gpt2")->name(), "gpt2-bpe");
  EXPECT_EQ(load_tokenizer(kFixtures / "bert")->name(), "bert-wordpiece");
  EXPECT_EQ(load_tokenizer(kFixtures / "xlmr")->name(), "xlmr-sentencepiece");
  const std::string message = error_of([] { load_tokenizer(kFixtures); });
  EXPECT_NE(message.find("vocab.json + merges.txt"), std::string::npos) << message;
}

TEST(TokenizerBatch, PadsTruncatesAndMasks) {
  const std::vector<std::string> texts = {"a short one", "a much longer line of text that goes on and on", ""};
  BatchOptions options;
  options.max_length = 8;
  const BatchEncoding batch = encode_batch(bert(true), texts, options);
  ASSERT_EQ(batch.input_ids.sizes(), (std::vector<int64_t>{3, 8}));
  const Encoding first = bert(true).encode_for_model(texts[0]);
  const auto n = static_cast<int64_t>(first.ids.size());
  EXPECT_TRUE(torch::equal(batch.input_ids[0].slice(0, 0, n), torch::tensor(first.ids)));
  EXPECT_EQ(batch.attention_mask[0].sum().item<int64_t>(), n);
  EXPECT_TRUE((batch.input_ids[0].slice(0, n) == bert(true).special_tokens().pad).all().item<bool>());
  // Truncated to 8 with [SEP] kept last.
  EXPECT_EQ(batch.attention_mask[1].sum().item<int64_t>(), 8);
  EXPECT_EQ(batch.input_ids[1][7].item<int64_t>(), bert(true).special_tokens().sep);
  EXPECT_EQ(batch.attention_mask[2].sum().item<int64_t>(), 2);  // [CLS] [SEP]

  // Pairs: longest-first, token types follow the segments.
  const BatchEncoding pairs = encode_batch(xlmr(), {"one two three four five six seven"}, {"yes"}, options);
  EXPECT_EQ(pairs.attention_mask.sum().item<int64_t>(), 8);
  EXPECT_EQ(pairs.input_ids[0][7].item<int64_t>(), 2);
  // GPT-2 has no pad token: eos pads, masked out.
  options.pad_to_max_length = true;
  const BatchEncoding gpt = encode_batch(gpt2(), {"hi"}, options);
  EXPECT_EQ(gpt.input_ids.size(1), 8);
  EXPECT_EQ(gpt.input_ids[0][7].item<int64_t>(), gpt2().special_tokens().eos);
  EXPECT_EQ(gpt.attention_mask[0][7].item<int64_t>(), 0);
}

TEST(TokenizerBatch, LongestFirstTruncation) {
  Ids a = {1, 2, 3, 4, 5, 6}, b = {7, 8};
  truncate_longest_first(a, b, 5);
  EXPECT_EQ(a, (Ids{1, 2, 3}));
  EXPECT_EQ(b, (Ids{7, 8}));
  a = {1, 2, 3};
  b = {4, 5, 6};
  truncate_longest_first(a, b, 4);
  EXPECT_EQ(a, (Ids{1, 2}));
  EXPECT_EQ(b, (Ids{4, 5}));
  EXPECT_THROW(bert(true).encode_for_model("a", "b", 4), std::invalid_argument);
}

}  // namespace
