// Options of the sharpness-aware optimizers: what each method computes is in
// docs/ALGORITHMS.md; this file only names the choices and their defaults.
#pragma once

#include <tram/ops.h>

#include <torch/arg.h>
#include <torch/optim/optimizer.h>

#include <cstddef>
#include <optional>
#include <string>

namespace tram {

// ---------------------------------------------------------------------------
// Per parameter group.
// ---------------------------------------------------------------------------

// Per-group options of every tram optimizer. The learning rate is not stored
// here: get_lr()/set_lr() read and write the learning rate of the matching
// group of the base optimizer, so an LR scheduler attached to either the tram
// optimizer or its base changes the one learning rate that is used.
class GroupOptions : public torch::optim::OptimizerCloneableOptions<GroupOptions> {
 public:
  GroupOptions() = default;
  // Fixed ascent radius: SAM's rho, ASAM's rho, FSAM's (and TRAM-Fisher's) gamma.
  TORCH_ARG(double, rho) = 0.05;
  // Adaptive scaling offset, T = |w| + eta (ASAM and the TRAM variants).
  TORCH_ARG(double, eta) = 0.01;
  // Fisher damping eta_f, f = 1 + eta_f * g^2 (FSAM, TRAM-Fisher).
  TORCH_ARG(double, fisher_eta) = 0.1;
  // SAM-ON (Mueller et al. 2023): false keeps the group out of the ascent —
  // neither perturbed nor in any ascent norm; the base still steps it.
  TORCH_ARG(bool, perturb) = true;

 public:
  double get_lr() const override;
  void set_lr(double lr) override;
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;

  // Points get_lr/set_lr at group `index` of `base`. Done by the tram
  // optimizer for each of its groups; unlinked options keep a local value.
  void link_learning_rate(torch::optim::Optimizer* base, std::size_t index);

 private:
  torch::optim::Optimizer* lr_base_ = nullptr;
  std::size_t lr_group_ = 0;
  double local_lr_ = 0.0;
};

// ---------------------------------------------------------------------------
// The choices the named methods (methods.h) offer. Each maps to a policy
// (policies.h) in src/methods.cpp, the one place where methods are named.
// ---------------------------------------------------------------------------

// Which ascent formula: the paper's, or the released TRAM code's, which never
// multiplies by the gradient (kept only so a study can compare the two;
// docs/ALGORITHMS.md §2, §12).
enum class AscentFormula { kPaper, kReleased };

// Where the ascent radius comes from (docs/ALGORITHMS.md §3).
enum class RadiusSource {
  kFixed,        // the group's rho (gamma)
  kTrustRegion,  // r = clamp(scale * d, 0, max_radius), d from the target below
};

// What the trust-region distance d compares the current predictions with
// (docs/ALGORITHMS.md §4).
enum class Target {
  kPrevious,    // TRAM-θt-1: the model at the previous step's parameters
  kPretrained,  // TRAM-θ0: the model at the parameters it had at construction
  kHistory,     // TRAM-EMA: the model at an EMA of the parameters (target_decay)
  kNoise,       // TRAM-ε (and TRAM-Fisher's trust-region radius): the current
                // model on noised input embeddings
};

// How the trust-region distance d compares the two predictions
// (docs/ALGORITHMS.md §5; the L2 and MMD ablations of the paper's Table 14).
enum class TrustRegionDistance {
  kKL,   // a KL divergence of the predictive distributions (TrustRegionOptions::divergence)
  kL2,   // mean over rows of ||current logits - target logits||
  kMMD,  // biased MMD estimate between the rows of the two logit tensors (kernel below)
};

// The MMD kernel, summed over the bandwidths b in {0.1, 0.2, 0.5, 1, 2, 5, 10}
// of the squared distance s = ||u - v||^2.
enum class MMDKernel {
  kIMQ2,  // (b^2 + s)^(-1/2), the paper's inverse multiquadric (default)
  kIMQ,   // b / (b + s)
  kIMQ3,  // b^2 / (b^2 + s)
  kRBF,   // exp(-s / (2 b))
};

enum class NoiseDistribution { kNormal, kUniform };

// Noise added to input embeddings by Pass::perturb on the passes that need it.
struct NoiseOptions {
  TORCH_ARG(NoiseDistribution, distribution) = NoiseDistribution::kNormal;
  // Standard deviation (normal) or half-width (uniform).
  TORCH_ARG(double, sigma) = 1e-2;
};

// TRAM's trust-region radius (docs/ALGORITHMS.md §3-5).
struct TrustRegionOptions {
  TORCH_ARG(Target, target) = Target::kPrevious;
  TORCH_ARG(TrustRegionDistance, distance) = TrustRegionDistance::kKL;
  // The KL's direction (distance kKL).
  TORCH_ARG(ops::Divergence, divergence) = ops::Divergence::kForward;
  // The MMD's kernel (distance kMMD).
  TORCH_ARG(MMDKernel, kernel) = MMDKernel::kIMQ2;
  TORCH_ARG(ops::Reduction, reduction) = ops::Reduction::kMean;
  TORCH_ARG(double, scale) = 1.0;
  // Upper bound of the radius; none by default. `max_radius = rho` enforces
  // ASAM's generalisation bound.
  TORCH_ARG(std::optional<double>, max_radius) = std::nullopt;
  // Noise of the TRAM-ε target (and of TRAM-Fisher's noisy pass).
  TORCH_ARG(NoiseOptions, noise) = NoiseOptions();
  // TRAM-EMA's δ in θ̄ <- δ θ̄ + (1 - δ) w: 0 is TRAM-θt-1, 1 is TRAM-θ0.
  TORCH_ARG(double, target_decay) = 0.99;
};

// Trust-region loss regularizers (docs/ALGORITHMS.md §7): L = L_task + lambda * R.
enum class Regularizer {
  kNone,
  kTRPO,  // R = KL(p_{θt-1} || p_θ)
  kR3F,   // R = symmetric KL between clean and noised-embedding predictions
  kMESA,  // R = tau^2 KL(p_ema^tau || p_θ^tau), EMA teacher
};

struct RegularizerOptions {
  TORCH_ARG(Regularizer, kind) = Regularizer::kNone;
  TORCH_ARG(double, lambda) = 0.1;
  // R3F's noise: uniform U(-1e-5, 1e-5) as in fairseq.
  TORCH_ARG(NoiseOptions, noise) =
      NoiseOptions().distribution(NoiseDistribution::kUniform).sigma(1e-5);
  TORCH_ARG(double, ema_decay) = 0.999;  // MESA
  TORCH_ARG(double, temperature) = 1.0;  // MESA
};

}  // namespace tram
