// Vision experiment: Fashion-MNIST (Debian's dataset-fashion-mnist).
#include "experiments.h"

#include <tram/hf/checkpoint.h>
#include <tram/hf/data/image_datasets.h>
#include <tram/hf/data/split.h>
#include <tram/hf/models/vit.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <sstream>

namespace tram::study {

namespace fs = std::filesystem;
namespace models = hf::models;

torch::Tensor rotate_images(const torch::Tensor& images, double degrees) {
  const double angle = degrees * M_PI / 180.0;
  auto theta = torch::tensor({std::cos(angle), -std::sin(angle), 0.0, std::sin(angle), std::cos(angle), 0.0},
                             images.options())
                   .view({1, 2, 3})
                   .expand({images.size(0), 2, 3});
  auto grid = torch::nn::functional::affine_grid(theta, images.sizes(), /*align_corners=*/false);
  return torch::nn::functional::grid_sample(
      images, grid,
      torch::nn::functional::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(
          false));
}

torch::Tensor add_gaussian_noise(const torch::Tensor& images, double sigma, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto noise = at::normal(0.0, sigma, images.sizes(), generator, images.options());
  return (images + noise).clamp(0.0, 1.0);
}

torch::Tensor gaussian_blur(const torch::Tensor& images, double sigma) {
  const int64_t radius = static_cast<int64_t>(std::ceil(2 * sigma));
  auto x = torch::arange(-radius, radius + 1, images.options());
  auto kernel_1d = torch::exp(-x * x / (2 * sigma * sigma));
  kernel_1d = kernel_1d / kernel_1d.sum();
  auto kernel = torch::outer(kernel_1d, kernel_1d).view({1, 1, 2 * radius + 1, 2 * radius + 1});
  kernel = kernel.expand({images.size(1), 1, 2 * radius + 1, 2 * radius + 1});
  return torch::nn::functional::conv2d(
      images, kernel, torch::nn::functional::Conv2dFuncOptions().padding(radius).groups(images.size(1)));
}

torch::Tensor invert_contrast(const torch::Tensor& images) { return 1.0 - images; }

namespace {

// Fashion-MNIST's pixel mean and standard deviation (training set).
constexpr double kPixelMean = 0.2860, kPixelStd = 0.3530;
torch::Tensor normalise(const torch::Tensor& images) { return (images - kPixelMean) / kPixelStd; }

struct Images {
  torch::Tensor images;  // [N, 1, 28, 28] in [0, 1]
  torch::Tensor labels;  // [N] in 0..4
};

// The images whose label is in [first, first + 5), labels shifted to 0..4;
// at most `limit` of them, a fixed random subset (data seed 0: the same for
// every method and seed).
Images select_classes(const hf::data::ImageClassification& data, int64_t first, int64_t limit) {
  auto keep = (data.labels >= first).logical_and(data.labels < first + 5).nonzero().squeeze(1);
  if (limit > 0 && limit < keep.size(0)) {
    auto order = hf::data::permutation(keep.size(0), /*seed=*/0);
    order.resize(static_cast<size_t>(limit));
    std::sort(order.begin(), order.end());
    keep = keep.index_select(0, torch::tensor(order));
  }
  return {data.images.index_select(0, keep), data.labels.index_select(0, keep) - first};
}

class VisionExperiment : public Experiment {
 public:
  explicit VisionExperiment(const VisionSettings& settings) : s_(settings) {}

  std::string name() const override { return "vision"; }

  TableSpec table() const override {
    return {"Vision: ViT pre-trained on Fashion-MNIST classes 0-4, fine-tuned on classes 5-9 (accuracy %)",
            "accuracy (%)",
            true,
            "clean",
            {"rotate-30", "noise-0.3", "blur-1.5", "invert"},
            {"radius", "d"}};
  }

  // What the pre-trained checkpoint depends on: a cached one with
  // another stamp is made again.
  std::string pretraining_stamp() const {
    std::ostringstream text;
    text << "vision/v1 hidden=" << s_.hidden << " layers=" << s_.layers << " heads=" << s_.heads
         << " patch=" << s_.patch << " pre=" << s_.pretrain_steps << "x" << s_.pretrain_batch << "@"
         << s_.pretrain_lr;
    return text.str();
  }

  std::string fingerprint() const override {
    std::ostringstream text;
    text << pretraining_stamp() << " ft=" << s_.finetune_examples << "/" << s_.finetune_steps << "x" << s_.finetune_batch
         << "@" << s_.finetune_lr << " eval=" << s_.eval_examples;
    return text.str();
  }

  void prepare(const fs::path& cache_dir) override {
    const auto train = hf::data::read_mnist_split(hf::data::kDebianFashionMnistDirectory, true);
    const auto test = hf::data::read_mnist_split(hf::data::kDebianFashionMnistDirectory, false);
    finetune_ = select_classes(train, 5, s_.finetune_examples);
    const Images evaluation = select_classes(test, 5, s_.eval_examples);
    eval_labels_ = evaluation.labels;
    eval_sets_ = {{"clean", normalise(evaluation.images)},
                  {"rotate-30", normalise(rotate_images(evaluation.images, 30.0))},
                  {"noise-0.3", normalise(add_gaussian_noise(evaluation.images, 0.3, /*seed=*/1234))},
                  {"blur-1.5", normalise(gaussian_blur(evaluation.images, 1.5))},
                  {"invert", normalise(invert_contrast(evaluation.images))}};
    finetune_.images = normalise(finetune_.images);

    checkpoint_ = cache_dir / "pretrained";
    const std::string stamp = pretraining_stamp();
    if (cached_checkpoint_matches(checkpoint_, stamp)) return;
    const Images pretrain = select_classes(train, 0, 0);
    pretrain_model(Images{normalise(pretrain.images), pretrain.labels});
    stamp_checkpoint(checkpoint_, stamp);
  }

  RunRecord run(const std::string& method, int64_t seed) override {
    seed_everything(static_cast<uint64_t>(seed));
    auto loaded = models::load_vit(checkpoint_);
    auto model = loaded.model;
    // The new task gets a new head (cross-dataset adaptation).
    {
      torch::NoGradGuard no_grad;
      model->classifier->weight.normal_(0.0, model->config().initializer_range);
      model->classifier->bias.zero_();
    }
    model->train();
    auto optimizer = make_study_optimizer(method, *model, s_.finetune_lr);
    hf::training::Schedule schedule{hf::training::ScheduleKind::kCosine, s_.finetune_lr, 0,
                                          s_.finetune_steps};
    EpochBatches batches(finetune_.images.size(0), s_.finetune_batch);
    const auto started = std::chrono::steady_clock::now();
    auto summary = train(
        *optimizer, schedule,
        [&](int64_t step) -> ForwardClosure {
          auto index = batches.rows_of(step);
          auto images = finetune_.images.index_select(0, index);
          auto labels = finetune_.labels.index_select(0, index);
          return [model, images, labels](const Pass& pass) mutable -> PassOutput {
            namespace F = torch::nn::functional;
            // pass.select: the rows ESAM keeps for pass 2 (every row otherwise).
            const auto x = pass.select(images), y = pass.select(labels);
            auto logits = model->forward(x, models::perturb_hook(pass));
            auto rows = F::cross_entropy(logits.detach(), y, F::CrossEntropyFuncOptions().reduction(torch::kNone));
            return {F::cross_entropy(logits, y), logits, {}, rows};
          };
        },
        s_.finetune_batch, "vision " + method + " seed " + std::to_string(seed), "images");
    RunRecord record = new_record(name(), method, seed, summary);
    for (const auto& [set, images] : eval_sets_) record.metrics.emplace_back(set, 100.0 * accuracy(model, images));
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    record.fingerprint = fingerprint();
    return record;
  }

 private:
  void pretrain_model(const Images& data) {
    seed_everything(0);
    nlohmann::json json = {{"model_type", "vit"},
                           {"architectures", {"ViTForImageClassification"}},
                           {"hidden_size", s_.hidden},
                           {"num_hidden_layers", s_.layers},
                           {"num_attention_heads", s_.heads},
                           {"intermediate_size", 2 * s_.hidden},
                           {"hidden_act", "gelu"},
                           {"hidden_dropout_prob", 0.0},
                           {"attention_probs_dropout_prob", 0.0},
                           {"initializer_range", 0.02},
                           {"layer_norm_eps", 1e-12},
                           {"image_size", 28},
                           {"patch_size", s_.patch},
                           {"num_channels", 1},
                           {"qkv_bias", true},
                           {"num_labels", 5}};
    hf::HfConfig config(json, "study vision config");
    models::ViTForImageClassification model(models::ViTConfig::from(config));
    model->train();
    auto optimizer = make_study_optimizer("adam", *model, s_.pretrain_lr);
    hf::training::Schedule schedule{hf::training::ScheduleKind::kCosine, s_.pretrain_lr,
                                          s_.pretrain_steps / 10, s_.pretrain_steps};
    const int64_t n = data.images.size(0);
    train(
        *optimizer, schedule,
        [&](int64_t) -> ForwardClosure {
          auto index = torch::randint(n, {s_.pretrain_batch}, torch::kInt64);
          auto images = data.images.index_select(0, index);
          auto labels = data.labels.index_select(0, index);
          return [model, images, labels](const Pass&) mutable -> PassOutput {
            auto logits = model->forward(images);
            return {torch::nn::functional::cross_entropy(logits, labels), logits, {}};
          };
        },
        s_.pretrain_batch, "vision pre-training (classes 0-4)", "images");
    fs::create_directories(checkpoint_);
    hf::save_pretrained(*model, config, checkpoint_);
  }

  double accuracy(models::ViTForImageClassification& model, const torch::Tensor& images) const {
    torch::NoGradGuard no_grad;
    EvalModeGuard eval_mode(*model);
    int64_t correct = 0;
    for (int64_t start = 0; start < images.size(0); start += 500) {
      auto logits = model->forward(images.slice(0, start, start + 500));
      correct += logits.argmax(1).eq(eval_labels_.slice(0, start, start + 500)).sum().item<int64_t>();
    }
    return static_cast<double>(correct) / static_cast<double>(images.size(0));
  }

  VisionSettings s_;
  Images finetune_;
  torch::Tensor eval_labels_;
  std::vector<std::pair<std::string, torch::Tensor>> eval_sets_;
  fs::path checkpoint_;
};

}  // namespace

std::unique_ptr<Experiment> make_vision_experiment(const VisionSettings& settings) {
  return std::make_unique<VisionExperiment>(settings);
}

}  // namespace tram::study
