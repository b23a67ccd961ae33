// tram::metrics — the analysis metrics of the TRAM paper (docs/ALGORITHMS.md
// §9): how similar two layers' representations are (linear CKA), and how
// sharp the loss surface is around a trained model (epsilon-sharpness).
//
// Both are measurements, not training steps: they never change a model. The
// sharpness probe perturbs the parameters while it runs and restores them
// bit-identically before it returns or throws.
#pragma once

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>

namespace tram::metrics {

// ---------------------------------------------------------------------------
// Linear CKA (Kornblith et al. 2019)
// ---------------------------------------------------------------------------

// Which of the two mathematically equal formulas linear_cka evaluates. The
// result does not depend on the choice beyond rounding; only cost does.
enum class GramForm {
  // The cheaper of the two for the shapes at hand (counted in multiply-adds):
  // kFeature when n * (d1 + d2) >= d1^2 + d1 d2 + d2^2, else kSample. For
  // d1 = d2 = d this is kFeature from n >= 1.5 d on, i.e. always when n >> d.
  kAuto,
  // Feature space: ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), Gram
  // matrices of size d x d. Cost ~ n (d1^2 + d1 d2 + d2^2).
  kFeature,
  // Sample space (HSIC form): <K, L>_F / (||K||_F ||L||_F) with the centred
  // Gram matrices K = Xc Xc^T, L = Yc Yc^T of size n x n. Cost ~ n^2 (d1 + d2).
  kSample,
};

// Linear centred kernel alignment of two representations of the same n
// examples: X is n x d1, Y is n x d2 (rows are examples, columns features).
// Each column is centred, then
//   CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F * ||Yc^T Yc||_F)   in [0, 1].
// CKA is invariant to orthogonal transforms and isotropic scaling of either
// representation (and to adding a constant to a column), but not to
// per-column rescaling.
//
// X and Y may have any floating dtype (fp16/bf16/fp32/fp64) and live on any
// device, the same for both; the computation runs on that device in fp64,
// so a layer's fp16 activations can be passed as they are. Inputs that
// require grad are fine: no autograd graph is recorded.
//
// A constant representation (every row equal, including d = 0) carries no
// information about the examples; CKA is 0/0 there and the function returns
// quiet NaN rather than throwing, so that one dead layer does not abort a
// whole layer-by-layer analysis. Check with std::isnan. Non-finite inputs
// also give NaN.
//
// Throws c10::Error (TORCH_CHECK) for undefined, non-2-D, non-floating or
// complex inputs, a different number of rows, fewer than 2 rows, or inputs
// on different devices.
double linear_cka(const torch::Tensor& X, const torch::Tensor& Y,
                  GramForm form = GramForm::kAuto);

// ---------------------------------------------------------------------------
// epsilon-sharpness (Keskar et al. 2017, as run by Juneja et al. 2023)
// ---------------------------------------------------------------------------

// Options of epsilon_sharpness. The defaults are the paper's (Juneja et al.'s
// settings, docs/ALGORITHMS.md §9); the evaluation batch size (32 there) is the
// caller's, through batch_loss.
struct SharpnessOptions {
  // Radius of the box, relative to each weight: |y_i| <= epsilon (|w_i| + 1).
  TORCH_ARG(double, epsilon) = 1e-5;
  // Learning rate of the gradient ascent on y.
  TORCH_ARG(double, lr) = 8e-5;
  // Number of ascent steps; 0 measures nothing (sharpness 0).
  TORCH_ARG(int64_t, steps) = 10;
  // Micro-batches whose gradients are averaged into one ascent step.
  TORCH_ARG(int64_t, accumulation) = 4;
};

struct SharpnessResult {
  // phi = 100 * (max(perturbed_loss, base_loss) - base_loss) / (1 + base_loss).
  // The maximum in Keskar's definition ranges over a box that contains y = 0,
  // so a final point worse than the start is not the maximum: phi >= 0.
  double sharpness = 0.0;
  // L(w): mean of batch_loss over all batches, at the unperturbed parameters.
  double base_loss = 0.0;
  // L(w + y) at the final perturbation, as evaluated (may be < base_loss when
  // the ascent on a few micro-batches lowered the mean loss).
  double perturbed_loss = 0.0;
};

// Keskar's epsilon-sharpness of `model` around its current parameters w:
//   phi = 100 * (max_{|y_i| <= eps (|w_i| + 1)} L(w + y) - L(w)) / (1 + L(w)),
// the maximum approximated by projected gradient ascent from y = 0.
//
// batch_loss(i), 0 <= i < num_batches, runs the model on evaluation batch i
// and returns its mean loss (non-negative, e.g. cross-entropy) as a
// one-element tensor *with* its autograd graph (no NoGradGuard or detach
// inside it; epsilon_sharpness enables grad for the ascent, so it may itself
// be called under no-grad, and disables grad where it only needs values).
// L(w) is the plain mean over batches, so give the batches equal sizes (or
// weight the returned losses accordingly).
//
// Procedure (docs/ALGORITHMS.md §9):
//   1. base_loss = L(w), every batch once, under no-grad.
//   2. For k = 0 .. steps-1: average the gradients of batch_loss over
//      `accumulation` consecutive batches, cycling 0, 1, .., num_batches-1, 0,
//      .. (step k uses batches (k * accumulation + m) % num_batches,
//      m = 0 .. accumulation-1), at the current point w + y; then
//      y <- clamp(y + lr * gradient, -eps (|w| + 1), eps (|w| + 1)).
//   3. perturbed_loss = L(w + y), every batch once, under no-grad. With
//      steps = 0 or no trainable parameter, y = 0 and perturbed_loss is
//      base_loss without a second evaluation.
// Everything runs with the module (and each submodule) in eval mode, so
// dropout is off and BatchNorm uses, and does not update, its running
// statistics.
//
// The perturbed parameters are model.parameters() that require grad (a
// parameter shared between submodules counts once); frozen parameters and
// buffers are untouched. Guarantees, also when batch_loss throws:
//   - parameters are restored bit-identically (from a copy, not w + y - y);
//   - every module's train/eval flag is restored individually;
//   - the parameters' .grad are left exactly as they were: the ascent takes
//     its gradients with torch::autograd::grad and never writes .grad.
// Memory: two extra copies of the perturbed parameters (w and y) plus one
// gradient.
//
// Throws c10::Error for epsilon < 0, lr < 0 (or either non-finite),
// steps < 0, accumulation < 1, num_batches < 1, an empty batch_loss, or a
// batch_loss result that is not a one-element floating tensor or (during the
// ascent) has no autograd graph, and for 1 + L(w) <= 0. Exceptions thrown by
// batch_loss propagate unchanged, after the restoration above.
SharpnessResult epsilon_sharpness(torch::nn::Module& model,
                                  const std::function<torch::Tensor(int64_t)>& batch_loss,
                                  int64_t num_batches,
                                  const SharpnessOptions& options = {});

}  // namespace tram::metrics
