// Analysis metrics (docs/ALGORITHMS.md §9). See include/tram/metrics.h for the contract.
#include <tram/metrics.h>

#include <torch/autograd.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <unordered_set>
#include <utility>
#include <vector>

namespace tram::metrics {

// ---------------------------------------------------------------------------
// Linear CKA
// ---------------------------------------------------------------------------

namespace {

constexpr const char* kCkaName = "tram::metrics::linear_cka: ";

void check_representation(const torch::Tensor& features, const char* name) {
  TORCH_CHECK(features.defined(), kCkaName, name,
              " is undefined; pass an n x d tensor (rows = examples, columns = features)");
  TORCH_CHECK(features.dim() == 2, kCkaName, name,
              " must be 2-D (n examples x d features), got shape ", features.sizes(),
              "; flatten the feature dimensions first, e.g. ", name, ".flatten(1)");
  TORCH_CHECK(features.is_floating_point(), kCkaName, name,
              " must have a real floating dtype (fp16, bf16, fp32, fp64), got ",
              features.scalar_type(), "; convert it with .to(torch::kFloat)");
}

// Every row equal: the representation cannot tell the examples apart. Tested
// on the input rather than on the centred fp64 copy because the fp64 mean of
// identical fp64 values need not reproduce them exactly, which would leave
// rounding noise instead of zeros and a meaningless CKA.
bool is_constant(const torch::Tensor& features) {
  return features.eq(features.select(0, 0)).all().item<bool>();
}

// Column-centred fp64 copy, scaled to unit Frobenius norm. CKA is invariant to
// the scale, and without it the fourth powers in the formula under- or
// overflow for fp64 inputs of extreme magnitude.
torch::Tensor centred_unit(const torch::Tensor& features) {
  torch::Tensor centred = features.to(torch::kFloat64);
  centred = centred - centred.mean(/*dim=*/0, /*keepdim=*/true);
  return centred / centred.norm();
}

GramForm resolve(GramForm form, int64_t n, int64_t d1, int64_t d2) {
  if (form != GramForm::kAuto) return form;
  // Multiply-adds of the three products of each form (see GramForm).
  const double rows = static_cast<double>(n);
  const double a = static_cast<double>(d1);
  const double b = static_cast<double>(d2);
  const double feature_cost = rows * (a * a + a * b + b * b);
  const double sample_cost = rows * rows * (a + b);
  return feature_cost <= sample_cost ? GramForm::kFeature : GramForm::kSample;
}

}  // namespace

double linear_cka(const torch::Tensor& X, const torch::Tensor& Y, GramForm form) {
  check_representation(X, "X");
  check_representation(Y, "Y");
  TORCH_CHECK(X.size(0) == Y.size(0), kCkaName,
              "X and Y must describe the same examples (same number of rows), got X ",
              X.sizes(), " and Y ", Y.sizes(), "; pass row i of both for example i");
  TORCH_CHECK(X.size(0) >= 2, kCkaName, "need at least 2 examples (rows) to centre, got ",
              X.size(0), "; pass a batch of examples");
  TORCH_CHECK(X.device() == Y.device(), kCkaName, "X is on ", X.device(), " but Y is on ",
              Y.device(), "; move both to the same device");

  torch::NoGradGuard no_grad;
  if (is_constant(X) || is_constant(Y)) return std::nan("");

  const torch::Tensor x = centred_unit(X);
  const torch::Tensor y = centred_unit(Y);
  torch::Tensor cross_similarity;  // ||Yc^T Xc||_F^2 = <K, L>_F
  torch::Tensor self_x;            // ||Xc^T Xc||_F   = ||K||_F
  torch::Tensor self_y;            // ||Yc^T Yc||_F   = ||L||_F
  if (resolve(form, X.size(0), X.size(1), Y.size(1)) == GramForm::kFeature) {
    cross_similarity = y.t().mm(x).square().sum();
    self_x = x.t().mm(x).norm();
    self_y = y.t().mm(y).norm();
  } else {
    // Centred columns make K = Xc Xc^T already equal to H (X X^T) H, so no
    // separate centring of the Gram matrices is needed.
    const torch::Tensor gram_x = x.mm(x.t());
    const torch::Tensor gram_y = y.mm(y.t());
    cross_similarity = gram_x.mul(gram_y).sum();
    self_x = gram_x.norm();
    self_y = gram_y.norm();
  }
  return cross_similarity.div(self_x * self_y).item<double>();
}

// ---------------------------------------------------------------------------
// epsilon-sharpness
// ---------------------------------------------------------------------------

namespace {

constexpr const char* kSharpnessName = "tram::metrics::epsilon_sharpness: ";

// Puts the model in eval mode and the perturbed parameters back exactly on
// every way out of epsilon_sharpness, including a throwing batch_loss.
class ProbeGuard {
 public:
  explicit ProbeGuard(torch::nn::Module& model) {
    // Pre-order (a module before its children), so that restoring in the same
    // order lets a child's own flag override what train() of its parent set.
    model.apply([this](torch::nn::Module& module) {
      modes_.emplace_back(&module, module.is_training());
    });
    model.eval();
  }

  ProbeGuard(const ProbeGuard&) = delete;
  ProbeGuard& operator=(const ProbeGuard&) = delete;

  // Takes ownership of the copies w of `params`.
  void protect(std::vector<torch::Tensor> params, std::vector<torch::Tensor> originals) {
    params_ = std::move(params);
    originals_ = std::move(originals);
  }

  // The normal way out: errors propagate to the caller.
  void restore() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) params_[i].copy_(originals_[i]);
    params_.clear();
    originals_.clear();
    for (auto& [module, training] : modes_) module->train(training);
    modes_.clear();
  }

  ~ProbeGuard() {
    // Reached with work left only while an exception unwinds; a second one
    // cannot be reported from here, and terminating would lose the first.
    try {
      restore();
    } catch (...) {
    }
  }

 private:
  std::vector<std::pair<torch::nn::Module*, bool>> modes_;
  std::vector<torch::Tensor> params_;
  std::vector<torch::Tensor> originals_;
};

torch::Tensor checked_loss(const std::function<torch::Tensor(int64_t)>& batch_loss,
                           int64_t batch) {
  torch::Tensor loss = batch_loss(batch);
  TORCH_CHECK(loss.defined(), kSharpnessName, "batch_loss(", batch,
              ") returned an undefined tensor; return the mean loss of that batch");
  TORCH_CHECK(loss.numel() == 1 && loss.is_floating_point(), kSharpnessName, "batch_loss(",
              batch, ") must return the mean loss of that batch as a one-element floating "
              "tensor, got shape ", loss.sizes(), " and dtype ", loss.scalar_type(),
              "; reduce it with .mean()");
  return loss;
}

// L at the current parameters: the plain mean of the batch losses. Summed on
// the device so that only one value is copied back.
double mean_loss(const std::function<torch::Tensor(int64_t)>& batch_loss,
                 int64_t num_batches) {
  torch::NoGradGuard no_grad;
  torch::Tensor total;
  for (int64_t batch = 0; batch < num_batches; ++batch) {
    torch::Tensor loss = checked_loss(batch_loss, batch).detach().to(torch::kFloat64).reshape({});
    total = total.defined() ? total + loss : loss;
  }
  return total.item<double>() / static_cast<double>(num_batches);
}

// Trainable parameters, each once even when submodules share it.
std::vector<torch::Tensor> perturbed_parameters(const torch::nn::Module& model) {
  std::vector<torch::Tensor> params;
  std::unordered_set<const void*> seen;
  for (const torch::Tensor& param : model.parameters(/*recurse=*/true)) {
    if (param.requires_grad() && seen.insert(param.unsafeGetTensorImpl()).second) {
      params.push_back(param);
    }
  }
  return params;
}

void check_options(const SharpnessOptions& options, int64_t num_batches, bool has_batch_loss) {
  TORCH_CHECK(std::isfinite(options.epsilon()) && options.epsilon() >= 0.0, kSharpnessName,
              "invalid epsilon: ", options.epsilon(),
              "; the box radius must be finite and >= 0 (the paper's default is 1e-5)");
  TORCH_CHECK(std::isfinite(options.lr()) && options.lr() >= 0.0, kSharpnessName,
              "invalid lr: ", options.lr(),
              "; the ascent learning rate must be finite and >= 0 (the paper's default is 8e-5)");
  TORCH_CHECK(options.steps() >= 0, kSharpnessName, "invalid steps: ", options.steps(),
              "; the number of ascent steps must be >= 0 (the paper's default is 10)");
  TORCH_CHECK(options.accumulation() >= 1, kSharpnessName,
              "invalid accumulation: ", options.accumulation(),
              "; each ascent step needs >= 1 micro-batch (the paper's default is 4)");
  TORCH_CHECK(num_batches >= 1, kSharpnessName, "invalid num_batches: ", num_batches,
              "; L(w) needs at least one evaluation batch");
  TORCH_CHECK(has_batch_loss, kSharpnessName,
              "batch_loss is empty; pass a function returning the loss of batch i");
}

}  // namespace

SharpnessResult epsilon_sharpness(torch::nn::Module& model,
                                  const std::function<torch::Tensor(int64_t)>& batch_loss,
                                  int64_t num_batches, const SharpnessOptions& options) {
  check_options(options, num_batches, static_cast<bool>(batch_loss));

  ProbeGuard guard(model);
  SharpnessResult result;
  result.base_loss = mean_loss(batch_loss, num_batches);
  result.perturbed_loss = result.base_loss;

  // Keskar's normalisation by 1 + L(w) presumes a non-negative loss.
  TORCH_CHECK(1.0 + result.base_loss > 0.0, kSharpnessName, "the base loss L(w) = ",
              result.base_loss, " makes 1 + L(w) <= 0, so the relative sharpness is undefined; "
              "pass a non-negative loss such as cross-entropy");

  std::vector<torch::Tensor> params = perturbed_parameters(model);
  if (options.steps() > 0 && !params.empty()) {
    std::vector<torch::Tensor> originals;
    std::vector<torch::Tensor> offsets;  // y
    originals.reserve(params.size());
    offsets.reserve(params.size());
    for (const torch::Tensor& param : params) {
      originals.push_back(param.detach().clone());
      offsets.push_back(torch::zeros_like(param, torch::MemoryFormat::Preserve));
    }
    guard.protect(params, originals);

    int64_t next_batch = 0;
    for (int64_t step = 0; step < options.steps(); ++step) {
      // d L / d y at w + y is d L / d w there: the gradient with respect to
      // the parameters themselves. autograd::grad keeps the users' .grad.
      std::vector<torch::Tensor> gradient_sum(params.size());
      for (int64_t micro = 0; micro < options.accumulation(); ++micro) {
        const int64_t batch = next_batch;
        next_batch = (next_batch + 1) % num_batches;
        torch::Tensor loss;
        {
          // Callers often measure from an evaluation routine under no-grad;
          // the ascent needs the graph regardless.
          torch::AutoGradMode enable_grad(true);
          loss = checked_loss(batch_loss, batch).reshape({});
        }
        TORCH_CHECK(loss.requires_grad(), kSharpnessName, "batch_loss(", batch,
                    ") returned a loss without autograd graph; compute it from the model's "
                    "parameters without .detach() or a NoGradGuard of its own");
        std::vector<torch::Tensor> grads =
            torch::autograd::grad({loss}, params, /*grad_outputs=*/{},
                                  /*retain_graph=*/false, /*create_graph=*/false,
                                  /*allow_unused=*/true);
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < params.size(); ++i) {
          if (!grads[i].defined()) continue;  // the loss does not depend on it
          // Out of place: autograd may hand back expanded views (e.g. the
          // gradient of a sum), which cannot be written in place.
          gradient_sum[i] = gradient_sum[i].defined() ? gradient_sum[i] + grads[i]
                                                      : std::move(grads[i]);
        }
      }

      torch::NoGradGuard no_grad;
      const double step_size = options.lr() / static_cast<double>(options.accumulation());
      for (size_t i = 0; i < params.size(); ++i) {
        if (gradient_sum[i].defined()) offsets[i].add_(gradient_sum[i], step_size);
        const torch::Tensor bound = originals[i].abs().add_(1.0).mul_(options.epsilon());
        offsets[i].clamp_(bound.neg(), bound);
        params[i].copy_(originals[i]).add_(offsets[i]);
      }
    }
    result.perturbed_loss = mean_loss(batch_loss, num_batches);
  }
  guard.restore();

  const double increase = std::max(result.perturbed_loss, result.base_loss) - result.base_loss;
  result.sharpness = 100.0 * increase / (1.0 + result.base_loss);
  return result;
}

}  // namespace tram::metrics
