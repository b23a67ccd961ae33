// The example models against Hugging Face: each fixture (tools/
// make_model_fixtures.py) is a tiny random checkpoint saved by transformers
// with the logits it computes in eval mode; the C++ models must load it and
// reproduce the logits. Also: checkpoint-key handling (missing, unexpected,
// prefixes, tied head, legacy names, shards, new heads), the embedding hook,
// and train/eval.
#include <tram/hf/checkpoint.h>
#include <tram/hf/data/text_labels.h>
#include <tram/hf/models/bert.h>
#include <tram/hf/models/gpt2.h>
#include <tram/hf/models/vit.h>
#include <tram/hf/safetensors.h>

#include "scratch_directory.h"

#include <tram/closure.h>
#include <tram/eval_mode.h>
#include <tram/factory.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <set>

namespace fs = std::filesystem;
namespace hf = tram::hf;
namespace models = tram::hf::models;
namespace st = tram::hf::safetensors;
using torch::Tensor;

namespace {

// fp32 logits of a 2-layer model: Hugging Face and LibTorch differ only in
// the order of float operations (observed ~1e-7).
constexpr double kParityTolerance = 1e-5;

fs::path fixture(const std::string& name) { return fs::path(TRAM_HF_FIXTURES) / "models" / name; }

std::map<std::string, Tensor> fixture_io(const std::string& name) {
  return st::load((fixture(name) / "io.safetensors").string());
}

std::map<std::string, Tensor> fixture_weights(const std::string& name) {
  return st::load((fixture(name) / hf::kWeightsFile).string());
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

template <class Strings>
bool any_contains(const Strings& texts, const std::string& part) {
  return std::any_of(texts.begin(), texts.end(), [&](const std::string& text) { return contains(text, part); });
}

// A model of any family behind one interface, so that every test runs on
// every fixture.
struct FixtureModel {
  std::string name;
  std::shared_ptr<torch::nn::Module> module;
  std::function<Tensor(const models::EmbeddingHook&)> forward;  // on the fixture's inputs
  hf::LoadReport report;
  int64_t embedding_width = 0;  // hidden size seen by the hook
  int64_t hooked_rows = 0;      // tokens / patches per example seen by the hook
};

FixtureModel load_fixture(const std::string& name, const fs::path& directory,
                          const models::PretrainedOptions& options = {}) {
  auto io = fixture_io(name);
  FixtureModel result;
  result.name = name;
  if (name == "vit") {
    auto loaded = models::load_vit(directory, options);
    auto model = loaded.model;
    result.module = model.ptr();
    result.report = loaded.report;
    result.embedding_width = model->config().hidden_size;
    result.hooked_rows = model->config().num_patches();
    result.forward = [model, io](const models::EmbeddingHook& hook) mutable {
      return model->forward(io.at("pixel_values"), hook);
    };
  } else if (name == "gpt2") {
    auto loaded = models::load_gpt2(directory, options);
    auto model = loaded.model;
    result.module = model.ptr();
    result.report = loaded.report;
    result.embedding_width = model->config().n_embd;
    result.hooked_rows = io.at("input_ids").size(1);
    result.forward = [model, io](const models::EmbeddingHook& hook) mutable {
      return model->forward(io.at("input_ids"), io.at("attention_mask"), hook);
    };
  } else {
    auto loaded = models::load_sequence_classifier(directory, options);
    auto model = loaded.model;
    result.module = model;
    result.report = loaded.report;
    result.embedding_width = model->config().hidden_size;
    result.hooked_rows = io.at("input_ids").size(1);
    result.forward = [model, io](const models::EmbeddingHook& hook) {
      const Tensor types = io.count("token_type_ids") ? io.at("token_type_ids") : Tensor();
      return model->forward(io.at("input_ids"), io.at("attention_mask"), hook, types);
    };
  }
  result.module->eval();
  return result;
}

FixtureModel load_fixture(const std::string& name) { return load_fixture(name, fixture(name)); }

const std::vector<std::string> kFixtures = {"vit", "gpt2", "bert", "roberta", "xlmr"};

// A temporary checkpoint directory: a fixture's config with altered weights.
class CheckpointTest : public ::testing::Test {
 protected:
  CheckpointTest()
      : scratch_("models_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())),
        directory_(scratch_.path()) {}

  fs::path write_checkpoint(const std::string& from, const std::map<std::string, Tensor>& weights,
                            const std::string& subdirectory = "checkpoint") const {
    const fs::path target = directory_ / subdirectory;
    fs::create_directories(target);
    fs::copy_file(fixture(from) / hf::kConfigFile, target / hf::kConfigFile, fs::copy_options::overwrite_existing);
    st::save((target / hf::kWeightsFile).string(), weights, {{"format", "pt"}});
    return target;
  }

  tram::hf::testing::ScratchDirectory scratch_;
  fs::path directory_;
};

}  // namespace

// ---------------------------------------------------------------------------
// Parity with Hugging Face
// ---------------------------------------------------------------------------

class ParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityTest, LogitsMatchHuggingFace) {
  const std::string name = GetParam();
  FixtureModel model = load_fixture(name);
  EXPECT_TRUE(model.report.complete()) << model.report.summary();
  EXPECT_TRUE(model.report.new_head.empty()) << model.report.summary();
  EXPECT_TRUE(model.report.ignored.empty()) << model.report.summary();

  const Tensor expected = fixture_io(name).at("logits");
  torch::NoGradGuard no_grad;
  const Tensor logits = model.forward({});
  ASSERT_EQ(logits.sizes(), expected.sizes());
  const double diff = max_abs_diff(logits, expected);
  std::cout << "[ parity ] " << name << ": logits " << logits.sizes() << ", max |C++ - HF| = " << diff
            << " (max |logit| " << expected.abs().max().item<double>() << ")\n";
  EXPECT_LE(diff, kParityTolerance);
}

TEST_P(ParityTest, ParameterNamesAreTheCheckpointKeys) {
  const std::string name = GetParam();
  FixtureModel model = load_fixture(name);
  std::set<std::string> parameters;
  for (const auto& item : model.module->named_parameters()) parameters.insert(item.key());
  std::set<std::string> checkpoint;
  for (const auto& [key, tensor] : fixture_weights(name)) checkpoint.insert(key);
  EXPECT_EQ(parameters, checkpoint);
  EXPECT_EQ(model.report.loaded.size(), checkpoint.size());
}

TEST_P(ParityTest, IdentityHookLeavesLogitsUnchangedAndNoiseChangesThem) {
  const std::string name = GetParam();
  FixtureModel model = load_fixture(name);
  torch::NoGradGuard no_grad;
  const Tensor plain = model.forward({});

  std::vector<int64_t> seen_shape;
  const Tensor identity = model.forward([&](const Tensor& embeddings) {
    seen_shape = embeddings.sizes().vec();
    return embeddings;
  });
  EXPECT_TRUE(torch::equal(identity, plain));
  // Token / patch embeddings only: one row per token or patch (no CLS token for ViT).
  ASSERT_EQ(seen_shape.size(), 3u);
  EXPECT_EQ(seen_shape[1], model.hooked_rows);
  EXPECT_EQ(seen_shape[2], model.embedding_width);

  torch::manual_seed(7);
  const Tensor noisy =
      model.forward([](const Tensor& embeddings) { return embeddings + 0.1 * torch::randn_like(embeddings); });
  EXPECT_GT(max_abs_diff(noisy, plain), 1e-3) << name;
}

TEST_P(ParityTest, DropoutActsOnlyInTrainMode) {
  const std::string name = GetParam();
  FixtureModel model = load_fixture(name);
  torch::NoGradGuard no_grad;
  const Tensor eval_logits = model.forward({});
  EXPECT_TRUE(torch::equal(model.forward({}), eval_logits));
  model.module->train();
  torch::manual_seed(3);
  const Tensor train_logits = model.forward({});
  EXPECT_GT(max_abs_diff(train_logits, eval_logits), 1e-4) << name << ": the config's dropout must act in train mode";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest, ::testing::ValuesIn(kFixtures),
                         [](const auto& info) { return info.param; });

TEST(Models, FixturesStoreTheExpectedDtypes) {
  // F16 / BF16 checkpoints load into fp32 models: every tensor is converted.
  EXPECT_TRUE(load_fixture("vit").report.converted.empty());
  for (const std::string name : {"gpt2", "bert", "roberta"}) {
    const auto report = load_fixture(name).report;
    EXPECT_EQ(report.converted.size(), report.loaded.size()) << name;
  }
  EXPECT_TRUE(any_contains(load_fixture("roberta").report.converted, "BF16 -> Float"));
}

TEST(Models, GPT2WithoutMaskMatchesMaskedUnpaddedRow) {
  // Row 0 of the fixture has no padding: the fused causal path (no mask) must
  // give what the explicit causal+padding mask gives.
  auto loaded = models::load_gpt2(fixture("gpt2"));
  loaded.model->eval();
  const auto io = fixture_io("gpt2");
  torch::NoGradGuard no_grad;
  const Tensor row = io.at("input_ids").slice(0, 0, 1);
  const Tensor unmasked = loaded.model->forward(row);
  EXPECT_LE(max_abs_diff(unmasked, io.at("logits").slice(0, 0, 1)), kParityTolerance);
}

TEST(Models, CausalLmLossPredictsTheNextToken) {
  torch::manual_seed(0);
  const Tensor logits = torch::randn({2, 5, 7});
  const Tensor ids = torch::randint(7, {2, 5}, torch::kLong);
  const Tensor predicting = models::next_token_logits(logits);
  ASSERT_EQ(predicting.sizes(), (std::vector<int64_t>{2, 4, 7}));
  // -log softmax(logits[b, t])[ids[b, t + 1]], averaged over the 8 predictions.
  double expected = 0.0;
  const Tensor log_probabilities = torch::log_softmax(logits.to(torch::kFloat64), -1);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t t = 0; t < 4; ++t) expected -= log_probabilities[b][t][ids[b][t + 1].item<int64_t>()].item<double>() / 8;
  }
  EXPECT_NEAR(models::causal_lm_loss(predicting, ids).item<double>(), expected, 1e-6);
}

TEST(Models, CausalLmEvaluationIsInEvalModeAndDoesNotDependOnTheBatch) {
  auto loaded = models::load_gpt2(fixture("gpt2"));  // dropout 0.1: train mode would be random
  auto& model = loaded.model;
  ASSERT_GT(model->config().resid_pdrop, 0.0);
  torch::manual_seed(1);
  const Tensor blocks = torch::randint(model->config().vocab_size, {5, 12}, torch::kLong);
  model->drop->eval();  // a submodule frozen in eval mode by its owner stays so
  const auto whole = models::evaluate_causal_lm(model, blocks, 5);
  EXPECT_TRUE(model->is_training());
  EXPECT_FALSE(model->drop->is_training());
  EXPECT_TRUE(model->h[0]->is_training());

  double expected = 0.0;
  {
    torch::NoGradGuard no_grad;
    tram::EvalModeGuard eval_mode(*model);
    expected = models::causal_lm_loss(models::next_token_logits(model->forward(blocks)), blocks).item<double>();
  }
  EXPECT_NEAR(whole.loss, expected, 1e-6);
  EXPECT_NEAR(whole.perplexity, std::exp(expected), 1e-5 * std::exp(expected));
  for (const int64_t batch : {1, 2, 3, 64}) {
    EXPECT_NEAR(models::evaluate_causal_lm(model, blocks, batch).loss, expected, 1e-6) << "batch " << batch;
  }
  EXPECT_THROW(models::evaluate_causal_lm(model, blocks, 0), std::invalid_argument);
  EXPECT_THROW(models::evaluate_causal_lm(model, blocks.slice(1, 0, 1), 4), std::invalid_argument);
}

TEST(Models, EncoderHookSeesTheWordEmbeddingsBeforePositions) {
  auto loaded = models::load_sequence_classifier(fixture("roberta"));
  auto model = loaded.model;
  model->eval();
  const auto io = fixture_io("roberta");
  torch::NoGradGuard no_grad;
  Tensor seen;
  model->forward(io.at("input_ids"), io.at("attention_mask"), [&](const Tensor& embeddings) {
    seen = embeddings;
    return embeddings;
  });
  EXPECT_TRUE(torch::equal(seen, model->embeddings->word_embeddings(io.at("input_ids"))));
  // RoBERTa positions: padding_idx + 1, +2, ... over real tokens, padding_idx on pads.
  const Tensor positions = model->embeddings->position_ids(io.at("input_ids"));
  const int64_t pad = model->config().pad_token_id;
  EXPECT_EQ(positions[0][0].item<int64_t>(), pad + 1);
  EXPECT_EQ(positions[1][-1].item<int64_t>(), pad);
  EXPECT_TRUE(torch::equal(positions.ne(pad), io.at("attention_mask").ne(0)));
}

TEST(Models, TramPassPerturbsOnlyNoisyPasses) {
  auto loaded = models::load_sequence_classifier(fixture("xlmr"));
  auto model = loaded.model;
  model->eval();
  const auto io = fixture_io("xlmr");
  const Tensor ids = io.at("input_ids"), mask = io.at("attention_mask");
  torch::NoGradGuard no_grad;
  const Tensor plain = model->forward(ids, mask);

  const tram::Pass clean(tram::PassKind::kClean, std::nullopt, nullptr);
  EXPECT_TRUE(torch::equal(model->forward(ids, mask, models::perturb_hook(clean)), plain));

  torch::manual_seed(11);
  const Tensor noise = 0.05 * torch::randn({ids.size(0), ids.size(1), model->config().hidden_size});
  const tram::NoiseSampler sampler = [&](const Tensor&, const tram::NoiseOptions&, const tram::Pass&) { return noise; };
  const tram::Pass noisy(tram::PassKind::kTarget, tram::NoiseOptions(), &sampler);
  const Tensor through_pass = model->forward(ids, mask, models::perturb_hook(noisy));
  const Tensor by_hand = model->forward(ids, mask, [&](const Tensor& embeddings) { return embeddings + noise; });
  EXPECT_TRUE(torch::equal(through_pass, by_hand));
  EXPECT_GT(max_abs_diff(through_pass, plain), 1e-4);
}

TEST(Models, TramNoiseStepDrivesTheModel) {
  // End to end: TRAM-ε through the forward closure on the XLM-R fixture.
  auto loaded = models::load_sequence_classifier(fixture("xlmr"));
  auto model = loaded.model;
  const auto io = fixture_io("xlmr");
  const Tensor ids = io.at("input_ids"), mask = io.at("attention_mask");
  const Tensor labels = torch::tensor({0, 2, 1}, torch::kLong);
  auto optimizer = tram::make_optimizer("tram-noise", model->parameters(), tram::parse_options("base=adam,lr=1e-3"));
  optimizer->set_module(model);
  model->train();
  const auto report = optimizer->step([&](const tram::Pass& pass) -> tram::PassOutput {
    const Tensor logits = model->forward(ids, mask, models::perturb_hook(pass));
    return {torch::nn::functional::cross_entropy(logits, labels), logits, {}};
  });
  EXPECT_TRUE(std::isfinite(report.loss));
  EXPECT_GT(report.distance, 0.0) << "the noised target pass must change the predictions";
}

// ---------------------------------------------------------------------------
// Checkpoint keys
// ---------------------------------------------------------------------------

TEST_F(CheckpointTest, AlteredCheckpointReportsMissingAndUnexpectedKeys) {
  auto weights = fixture_weights("bert");
  weights.erase("bert.encoder.layer.1.output.dense.bias");
  weights["bert.encoder.layer.7.output.dense.bias"] = torch::zeros({32});
  const auto report = load_fixture("bert", write_checkpoint("bert", weights)).report;
  EXPECT_EQ(report.missing, std::vector<std::string>{"bert.encoder.layer.1.output.dense.bias"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"bert.encoder.layer.7.output.dense.bias"});
  EXPECT_FALSE(report.complete());
  const std::string summary = report.summary();
  EXPECT_TRUE(contains(summary, "MISSING")) << summary;
  EXPECT_TRUE(contains(summary, "UNEXPECTED")) << summary;
  EXPECT_TRUE(contains(summary, "bert.encoder.layer.1.output.dense.bias")) << summary;
  EXPECT_TRUE(contains(summary, "bert.encoder.layer.7.output.dense.bias")) << summary;
}

TEST_F(CheckpointTest, ShapeMismatchOutsideTheHeadIsAnError) {
  auto weights = fixture_weights("bert");
  weights["bert.encoder.layer.0.intermediate.dense.weight"] = torch::zeros({36, 32});
  const fs::path directory = write_checkpoint("bert", weights);
  try {
    models::load_sequence_classifier(directory);
    ADD_FAILURE() << "a shape mismatch outside the head must not load";
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    EXPECT_TRUE(contains(message, "bert.encoder.layer.0.intermediate.dense.weight")) << message;
    EXPECT_TRUE(contains(message, "[36, 32]")) << message;
    EXPECT_TRUE(contains(message, "[37, 32]")) << message;
    EXPECT_TRUE(contains(message, hf::kWeightsFile)) << message;
  }
}

TEST(Checkpoint, NewHeadWhenNumLabelsDiffers) {
  models::PretrainedOptions options;
  options.num_labels = 5;
  torch::manual_seed(0);
  auto loaded = models::load_sequence_classifier(fixture("xlmr"), options);
  auto* roberta = dynamic_cast<models::RobertaForSequenceClassificationImpl*>(loaded.model.get());
  ASSERT_NE(roberta, nullptr);
  EXPECT_EQ(roberta->out_proj->weight.sizes(), (std::vector<int64_t>{5, 32}));
  EXPECT_EQ(loaded.config.num_labels(), 5);
  EXPECT_TRUE(loaded.report.complete()) << loaded.report.summary();
  ASSERT_EQ(loaded.report.new_head.size(), 2u) << loaded.report.summary();
  EXPECT_TRUE(any_contains(loaded.report.new_head, "classifier.out_proj.weight [5, 32] (checkpoint has [3, 32])"));
  EXPECT_TRUE(any_contains(loaded.report.new_head, "classifier.out_proj.bias [5] (checkpoint has [3])"));
  EXPECT_TRUE(contains(loaded.report.summary(), "new head")) << loaded.report.summary();
  std::cout << "[ report ] " << loaded.report.summary();
  // classifier.dense keeps the checkpoint's weights.
  EXPECT_TRUE(torch::equal(roberta->dense->weight, fixture_weights("xlmr").at("classifier.dense.weight")));
  // Hugging Face's initialisation: normal(0, initializer_range), bias 0.
  EXPECT_TRUE(torch::equal(roberta->out_proj->bias, torch::zeros({5})));
  const double std_dev = roberta->out_proj->weight.std().item<double>();
  EXPECT_NEAR(std_dev, roberta->config().initializer_range, 0.3 * roberta->config().initializer_range);

  loaded.model->eval();
  const auto io = fixture_io("xlmr");
  torch::NoGradGuard no_grad;
  EXPECT_EQ(loaded.model->forward(io.at("input_ids"), io.at("attention_mask")).sizes(), (std::vector<int64_t>{3, 5}));

  options.num_labels = 2;
  auto vit = models::load_vit(fixture("vit"), options);
  EXPECT_EQ(vit.model->classifier->weight.sizes(), (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(vit.report.new_head.size(), 2u);
  auto bert = models::load_sequence_classifier(fixture("bert"), options);
  EXPECT_EQ(bert.report.new_head.size(), 2u) << bert.report.summary();
}

TEST_F(CheckpointTest, NewHeadWhenTheCheckpointHasNone) {
  auto weights = fixture_weights("xlmr");
  for (auto it = weights.begin(); it != weights.end();)
    it = it->first.rfind("classifier.", 0) == 0 ? weights.erase(it) : std::next(it);
  const auto report = load_fixture("xlmr", write_checkpoint("xlmr", weights)).report;
  EXPECT_TRUE(report.complete()) << report.summary();
  EXPECT_EQ(report.new_head.size(), 4u) << report.summary();
  EXPECT_TRUE(any_contains(report.new_head, "classifier.dense.weight [32, 32] (not in the checkpoint)"));
}

TEST_F(CheckpointTest, BaseModelCheckpointsWithoutPrefixLoad) {
  // XLMRobertaModel / GPT2Model checkpoints store keys without "roberta." /
  // "transformer.", plus tensors these task models do not use.
  auto xlmr = fixture_weights("xlmr");
  std::map<std::string, Tensor> bare;
  for (const auto& [key, tensor] : xlmr) bare[key.rfind("roberta.", 0) == 0 ? key.substr(8) : key] = tensor;
  bare["pooler.dense.weight"] = torch::zeros({32, 32});
  bare["lm_head.bias"] = torch::zeros({100});
  bare["embeddings.position_ids"] = torch::arange(26).unsqueeze(0);
  FixtureModel model = load_fixture("xlmr", write_checkpoint("xlmr", bare, "xlmr"));
  EXPECT_TRUE(model.report.complete()) << model.report.summary();
  EXPECT_EQ(model.report.ignored.size(), 3u) << model.report.summary();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model.forward({}), load_fixture("xlmr").forward({})));

  auto gpt2 = fixture_weights("gpt2");
  std::map<std::string, Tensor> bare_gpt2;
  for (const auto& [key, tensor] : gpt2) bare_gpt2[key.substr(std::string("transformer.").size())] = tensor;
  bare_gpt2["h.0.attn.bias"] = torch::ones({1, 1, 24, 24}).tril();
  bare_gpt2["h.1.attn.masked_bias"] = torch::tensor(-1e4);
  bare_gpt2["lm_head.weight"] = gpt2.at("transformer.wte.weight");
  FixtureModel lm = load_fixture("gpt2", write_checkpoint("gpt2", bare_gpt2, "gpt2"));
  EXPECT_TRUE(lm.report.complete()) << lm.report.summary();
  EXPECT_EQ(lm.report.ignored.size(), 3u) << lm.report.summary();
  EXPECT_TRUE(any_contains(lm.report.ignored, "lm_head.weight (tied to transformer.wte.weight"));
  EXPECT_TRUE(torch::equal(lm.forward({}), load_fixture("gpt2").forward({})));
}

TEST_F(CheckpointTest, TiedHeadFillsTheEmbeddingWhenOnlyItIsSaved) {
  auto weights = fixture_weights("gpt2");
  weights["lm_head.weight"] = weights.at("transformer.wte.weight");
  weights.erase("transformer.wte.weight");
  FixtureModel model = load_fixture("gpt2", write_checkpoint("gpt2", weights));
  EXPECT_TRUE(model.report.complete()) << model.report.summary();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model.forward({}), load_fixture("gpt2").forward({})));
}

TEST_F(CheckpointTest, LegacyLayerNormNamesLoad) {
  auto weights = fixture_weights("bert");
  weights["bert.embeddings.LayerNorm.gamma"] = weights.at("bert.embeddings.LayerNorm.weight");
  weights["bert.embeddings.LayerNorm.beta"] = weights.at("bert.embeddings.LayerNorm.bias");
  weights.erase("bert.embeddings.LayerNorm.weight");
  weights.erase("bert.embeddings.LayerNorm.bias");
  FixtureModel model = load_fixture("bert", write_checkpoint("bert", weights));
  EXPECT_TRUE(model.report.complete()) << model.report.summary();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model.forward({}), load_fixture("bert").forward({})));
}

TEST_F(CheckpointTest, KeysFillingTheSameParameterTwiceAreAnError) {
  auto weights = fixture_weights("xlmr");
  weights["embeddings.LayerNorm.bias"] = weights.at("roberta.embeddings.LayerNorm.bias");
  const fs::path directory = write_checkpoint("xlmr", weights);
  try {
    models::load_sequence_classifier(directory);
    ADD_FAILURE() << "two keys for one parameter must be rejected";
  } catch (const std::runtime_error& error) {
    EXPECT_TRUE(contains(error.what(), "both fill parameter 'roberta.embeddings.LayerNorm.bias'")) << error.what();
  }
}

TEST_F(CheckpointTest, ShardedCheckpointsLoad) {
  const auto weights = fixture_weights("xlmr");
  std::map<std::string, Tensor> shards[2];
  nlohmann::json weight_map = nlohmann::json::object();
  int index = 0;
  for (const auto& [key, tensor] : weights) {
    const std::string shard = "model-0000" + std::to_string(index % 2 + 1) + "-of-00002.safetensors";
    shards[index % 2][key] = tensor;
    weight_map[key] = shard;
    ++index;
  }
  const fs::path directory = directory_ / "sharded";
  fs::create_directories(directory);
  fs::copy_file(fixture("xlmr") / hf::kConfigFile, directory / hf::kConfigFile);
  st::save((directory / "model-00001-of-00002.safetensors").string(), shards[0]);
  st::save((directory / "model-00002-of-00002.safetensors").string(), shards[1]);
  auto write_index = [&](const nlohmann::json& map) {
    std::ofstream(directory / hf::kShardIndexFile)
        << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump(2);
  };
  write_index(weight_map);

  FixtureModel model = load_fixture("xlmr", directory);
  EXPECT_TRUE(model.report.complete()) << model.report.summary();
  EXPECT_TRUE(contains(model.report.source, hf::kShardIndexFile)) << model.report.source;
  EXPECT_EQ(model.report.loaded.size(), weights.size());
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model.forward({}), load_fixture("xlmr").forward({})));

  // The index names a shard that is not there.
  nlohmann::json broken = weight_map;
  broken["classifier.dense.bias"] = "model-00003-of-00002.safetensors";
  write_index(broken);
  EXPECT_THROW(
      {
        try {
          models::load_sequence_classifier(directory);
        } catch (const std::runtime_error& error) {
          EXPECT_TRUE(contains(error.what(), "model-00003-of-00002.safetensors")) << error.what();
          EXPECT_TRUE(contains(error.what(), "classifier.dense.bias")) << error.what();
          throw;
        }
      },
      std::runtime_error);
  // The index places a tensor in the wrong shard.
  broken = weight_map;
  const std::string key = weights.begin()->first;
  broken[key] = weight_map[key] == "model-00001-of-00002.safetensors" ? "model-00002-of-00002.safetensors"
                                                                      : "model-00001-of-00002.safetensors";
  write_index(broken);
  EXPECT_THROW(
      {
        try {
          models::load_sequence_classifier(directory);
        } catch (const std::runtime_error& error) {
          EXPECT_TRUE(contains(error.what(), "has no such tensor")) << error.what();
          EXPECT_TRUE(contains(error.what(), key)) << error.what();
          throw;
        }
      },
      std::runtime_error);
}

TEST_F(CheckpointTest, SavePretrainedRoundTrips) {
  models::PretrainedOptions options;
  options.num_labels = 4;
  auto first = models::load_sequence_classifier(fixture("bert"), options);
  const fs::path saved = directory_ / "fine-tuned";
  hf::save_pretrained(*first.model, first.config, saved);

  auto second = models::load_sequence_classifier(saved);
  EXPECT_TRUE(second.report.complete()) << second.report.summary();
  EXPECT_TRUE(second.report.new_head.empty()) << second.report.summary();
  EXPECT_EQ(second.config.num_labels(), 4);
  // The fixture was stored in float16; the saved weights are float32 and the config must say so.
  EXPECT_EQ(second.config.string("dtype", ""), "float32");
  EXPECT_EQ(st::File((saved / hf::kWeightsFile).string()).metadata().at("format"), "pt");
  first.model->eval();
  second.model->eval();
  const auto io = fixture_io("bert");
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(first.model->forward(io.at("input_ids"), io.at("attention_mask")),
                           second.model->forward(io.at("input_ids"), io.at("attention_mask"))));
}

TEST(Checkpoint, DtypeOptionConvertsTheModel) {
  models::PretrainedOptions options;
  options.dtype = torch::kFloat64;
  auto loaded = models::load_gpt2(fixture("gpt2"), options);
  EXPECT_EQ(loaded.model->wte->weight.scalar_type(), torch::kFloat64);
  loaded.model->eval();
  const auto io = fixture_io("gpt2");
  torch::NoGradGuard no_grad;
  const Tensor logits = loaded.model->forward(io.at("input_ids"), io.at("attention_mask"));
  EXPECT_EQ(logits.scalar_type(), torch::kFloat64);
  EXPECT_LE(max_abs_diff(logits, io.at("logits")), kParityTolerance);
}

// A num_labels of 10^8 made with_num_labels() write 10^8 label names (the
// config harness timed out on it: fuzz/corpus/hf_config/regression-num-labels).
TEST(HfConfig, RejectsANumLabelsNoHeadCouldHaveNamingTheFileAndField) {
  for (const int64_t count : {int64_t{100000000}, int64_t{0}, int64_t{-3}, tram::hf::data::kMaxLabels}) {
    SCOPED_TRACE(count);
    const hf::HfConfig config(nlohmann::json{{"num_labels", count}}, "/models/x/config.json");
    try {
      (void)config.num_labels();
      ADD_FAILURE() << "num_labels " << count << " was accepted";
    } catch (const std::runtime_error& error) {
      EXPECT_TRUE(contains(error.what(), "/models/x/config.json")) << error.what();
      EXPECT_TRUE(contains(error.what(), "\"num_labels\"")) << error.what();
    }
    EXPECT_THROW((void)config.with_num_labels(count), std::invalid_argument);
  }
  const hf::HfConfig largest(nlohmann::json{{"num_labels", tram::hf::data::kMaxLabels - 1}}, "config.json");
  EXPECT_EQ(largest.num_labels(), tram::hf::data::kMaxLabels - 1);
  EXPECT_EQ(largest.with_num_labels(3).num_labels(), 3);
}

TEST_F(CheckpointTest, ConfigAndDirectoryErrorsNameTheFileAndField) {
  // A field of the wrong type.
  const fs::path bad = directory_ / "bad_config";
  fs::create_directories(bad);
  nlohmann::json config;
  std::ifstream(fixture("vit") / hf::kConfigFile) >> config;
  config["hidden_size"] = "wide";
  std::ofstream(bad / hf::kConfigFile) << config.dump();
  try {
    models::load_vit(bad);
    ADD_FAILURE() << "hidden_size must be an integer";
  } catch (const std::runtime_error& error) {
    EXPECT_TRUE(contains(error.what(), (bad / hf::kConfigFile).string())) << error.what();
    EXPECT_TRUE(contains(error.what(), "\"hidden_size\"")) << error.what();
  }
  // A checkpoint of another family.
  try {
    models::load_vit(fixture("bert"));
    ADD_FAILURE() << "a BERT checkpoint is not a ViT";
  } catch (const std::runtime_error& error) {
    EXPECT_TRUE(contains(error.what(), "model_type")) << error.what();
    EXPECT_TRUE(contains(error.what(), "'bert'")) << error.what();
  }
  // Only PyTorch pickles: the message says how to convert.
  const fs::path pickles = directory_ / "pickles";
  fs::create_directories(pickles);
  fs::copy_file(fixture("vit") / hf::kConfigFile, pickles / hf::kConfigFile);
  std::ofstream(pickles / "pytorch_model.bin") << "not read";
  try {
    models::load_vit(pickles);
    ADD_FAILURE() << "pytorch_model.bin is not read";
  } catch (const std::runtime_error& error) {
    EXPECT_TRUE(contains(error.what(), "save_pretrained")) << error.what();
  }
  // No weights at all.
  fs::remove(pickles / "pytorch_model.bin");
  EXPECT_THROW(models::load_vit(pickles), std::runtime_error);
}

TEST(Checkpoint, NormalisationRules) {
  hf::KeyScheme scheme;
  scheme.base_prefix = "transformer.";
  scheme.tied = {{"lm_head.weight", "transformer.wte.weight"}};
  scheme.unused = {{R"(\.attn\.bias$)", "buffer"}};
  const std::vector<std::string> model = {"transformer.wte.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"};
  const auto mapping = hf::map_checkpoint_keys(
      {"wte.weight", "lm_head.weight", "ln_f.gamma", "transformer.ln_f.beta", "h.0.attn.bias", "stray"}, model, scheme);
  EXPECT_EQ(mapping.source.at("transformer.wte.weight"), "wte.weight");
  EXPECT_EQ(mapping.source.at("transformer.ln_f.weight"), "ln_f.gamma");
  EXPECT_EQ(mapping.source.at("transformer.ln_f.bias"), "transformer.ln_f.beta");
  EXPECT_EQ(mapping.unexpected, std::vector<std::string>{"stray"});
  ASSERT_EQ(mapping.ignored.size(), 2u);
  EXPECT_EQ(mapping.ignored[0].first, "lm_head.weight");
  EXPECT_EQ(mapping.ignored[1].first, "h.0.attn.bias");
}
