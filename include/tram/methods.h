// The named optimizers. Each is the engine (SharpnessAware) with a policy
// composition; none has a loop of its own. Defaults: docs/ALGORITHMS.md §10.
//
//   auto base = std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
//   tram::SAM optimizer(base, tram::SAMOptions().rho(0.05));
#pragma once

#include <tram/method.h>
#include <tram/optimizer.h>

namespace tram {

// SAM (Foret et al. 2021): e = rho * g / (||g|| + eps_norm).
struct SAMOptions {
  TORCH_ARG(double, rho) = 0.05;
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// ASAM (Kwon et al. 2021): e = rho * T^2 g / (||T g|| + eps_norm), T = |w| + eta.
struct ASAMOptions {
  TORCH_ARG(double, rho) = 0.5;
  TORCH_ARG(double, eta) = 0.01;
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// FSAM (Kim et al. 2022): f = 1 + eta_f g^2, e = gamma (g / f) / sqrt(sum g^2/f + eps_norm).
struct FSAMOptions {
  TORCH_ARG(double, gamma) = 0.1;
  TORCH_ARG(double, fisher_eta) = 0.1;
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// TRAM (Sherborne et al. 2024): ASAM's ascent with the trust-region radius
// r = clamp(scale * d, 0, max_radius); d = D(p_target || p_current) on the
// batch. trust_region.target: kPrevious (TRAM-θt-1), kPretrained (TRAM-θ0),
// kNoise (TRAM-ε).
//
//   tram::TRAM opt(base, tram::TRAMOptions().trust_region(
//                            tram::TrustRegionOptions().target(tram::Target::kPretrained).scale(10)));
struct TRAMOptions {
  TORCH_ARG(TrustRegionOptions, trust_region) = TrustRegionOptions();
  TORCH_ARG(double, eta) = 0.01;
  // false: T = 1, SAM's direction with the trust-region radius (with
  // formula kReleased, the released code's non-adaptive branch).
  TORCH_ARG(bool, adaptive) = true;
  TORCH_ARG(AscentFormula, formula) = AscentFormula::kPaper;
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// TRAM-Fisher (paper Algorithm 2): FSAM's ascent from the gradient g_z of a
// first pass on noised embeddings (trust_region.noise). Radius gamma, or with
// radius(RadiusSource::kTrustRegion) the trust-region radius from
// d = D(p_noised || p_clean); trust_region.target must then be kNoise.
struct TRAMFisherOptions {
  TORCH_ARG(double, gamma) = 0.1;
  TORCH_ARG(double, fisher_eta) = 0.1;
  TORCH_ARG(RadiusSource, radius) = RadiusSource::kFixed;
  TORCH_ARG(TrustRegionOptions, trust_region) = TrustRegionOptions().target(Target::kNoise);
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// The peers' SAM variants (docs/ALGORITHMS.md §16). Each takes SAM's ascent
// (adaptive = true: ASAM's, T = |w| + eta) with radius rho and changes the
// gradients around it (policy::GradientRule).

// GSAM (Zhuang et al. 2022): descent g_p - alpha g_perp.
struct GSAMOptions {
  TORCH_ARG(double, rho) = 0.05;
  TORCH_ARG(double, alpha) = 0.4;
  TORCH_ARG(bool, adaptive) = false;
  TORCH_ARG(double, eta) = 0.01;
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// LookSAM (Liu et al. 2022): the SAM step every k-th step; one pass reusing
// its orthogonal gradient component g_v (weight alpha) in between.
struct LookSAMOptions {
  TORCH_ARG(double, rho) = 0.05;
  TORCH_ARG(int64_t, k) = 5;
  TORCH_ARG(double, alpha) = 0.7;
  TORCH_ARG(bool, adaptive) = false;
  TORCH_ARG(double, eta) = 0.01;
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// ESAM (Du et al. 2022): SWP perturbs each tensor with probability beta
// (radius rho / beta); SDS runs pass 2 on the fraction gamma of the rows whose
// loss the ascent raised most (needs PassOutput::row_losses).
struct ESAMOptions {
  TORCH_ARG(double, rho) = 0.05;
  TORCH_ARG(double, beta) = 0.5;
  TORCH_ARG(double, gamma) = 0.5;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(bool, adaptive) = false;
  TORCH_ARG(double, eta) = 0.01;
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// F-SAM (Li et al. 2024): the ascent along g - sigma m, m an EMA (factor
// lambda; factory key friendly_lambda) of the gradients.
struct FriendlySAMOptions {
  TORCH_ARG(double, rho) = 0.05;
  TORCH_ARG(double, sigma) = 1.0;
  TORCH_ARG(double, lambda) = 0.9;
  TORCH_ARG(bool, adaptive) = false;
  TORCH_ARG(double, eta) = 0.01;
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// VaSSO (Li & Giannakis 2023): the ascent along d <- (1 - theta) d + theta g.
struct VaSSOOptions {
  TORCH_ARG(double, rho) = 0.05;
  TORCH_ARG(double, theta) = 0.9;
  TORCH_ARG(bool, adaptive) = false;
  TORCH_ARG(double, eta) = 0.01;
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// WSAM (Yue et al. 2023): loss + gamma / (1 - gamma) sharpness; decouple: the
// sharpness term is applied after the base step, outside its moments.
struct WSAMOptions {
  TORCH_ARG(double, rho) = 0.05;
  TORCH_ARG(double, gamma) = 0.9;
  TORCH_ARG(bool, decouple) = true;
  TORCH_ARG(bool, adaptive) = false;
  TORCH_ARG(double, eta) = 0.01;
  TORCH_ARG(double, eps_norm) = 1e-12;
};

// The policy compositions, shared by the classes below and the factory.
std::pair<MethodConfig, GroupOptions> compose(const SAMOptions& options);
std::pair<MethodConfig, GroupOptions> compose(const ASAMOptions& options);
std::pair<MethodConfig, GroupOptions> compose(const FSAMOptions& options);
std::pair<MethodConfig, GroupOptions> compose(const TRAMOptions& options);
std::pair<MethodConfig, GroupOptions> compose(const TRAMFisherOptions& options);
std::pair<MethodConfig, GroupOptions> compose(const GSAMOptions& options);
std::pair<MethodConfig, GroupOptions> compose(const LookSAMOptions& options);
std::pair<MethodConfig, GroupOptions> compose(const ESAMOptions& options);
std::pair<MethodConfig, GroupOptions> compose(const FriendlySAMOptions& options);
std::pair<MethodConfig, GroupOptions> compose(const VaSSOOptions& options);
std::pair<MethodConfig, GroupOptions> compose(const WSAMOptions& options);
// A regularizer alone (no ascent): TRPO, R3F or MESA on the base optimizer.
std::pair<MethodConfig, GroupOptions> compose(const RegularizerOptions& options);
// Adds a regularizer to a sharpness-aware composition ("ASAM+TRPO"), applied
// to the loss of both passes (paper C.3).
std::pair<MethodConfig, GroupOptions> with_regularizer(std::pair<MethodConfig, GroupOptions> method,
                                                       const RegularizerOptions& regularizer);
// The display name of a regularizer ("TRPO", "R3F", "MESA").
const char* to_string(Regularizer kind);

namespace detail {
template <class Options>
class Named : public SharpnessAware {
 public:
  explicit Named(std::shared_ptr<torch::optim::Optimizer> base, const Options& options = Options())
      : Named(std::move(base), compose(options)) {}

 private:
  Named(std::shared_ptr<torch::optim::Optimizer> base, std::pair<MethodConfig, GroupOptions> composed)
      : SharpnessAware(std::move(base), std::move(composed.first), std::move(composed.second)) {}
};
}  // namespace detail

using SAM = detail::Named<SAMOptions>;
using ASAM = detail::Named<ASAMOptions>;
using FSAM = detail::Named<FSAMOptions>;
using TRAM = detail::Named<TRAMOptions>;
using TRAMFisher = detail::Named<TRAMFisherOptions>;
using GSAM = detail::Named<GSAMOptions>;
using LookSAM = detail::Named<LookSAMOptions>;
using ESAM = detail::Named<ESAMOptions>;
using FriendlySAM = detail::Named<FriendlySAMOptions>;
using VaSSO = detail::Named<VaSSOOptions>;
using WSAM = detail::Named<WSAMOptions>;
// TRPO, R3F or MESA (RegularizerOptions::kind) on the base optimizer.
using TrustRegionRegularized = detail::Named<RegularizerOptions>;

}  // namespace tram
