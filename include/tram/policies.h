// The policies tram ships, one file each under src/policies/. The named
// methods (methods.h) are compositions of these; a MethodConfig can also be
// composed from them directly, with policies of one's own beside them.
#pragma once

#include <tram/options.h>
#include <tram/policy.h>

#include <cstdint>
#include <memory>
#include <optional>

namespace tram::policy {

// Ascent directions (docs/ALGORITHMS.md §2).
std::shared_ptr<const Direction> sam_direction();       // T = 1
std::shared_ptr<const Direction> adaptive_direction();  // T = |w| + eta
std::shared_ptr<const Direction> fisher_direction();    // f = 1 + eta_f g^2
// The released TRAM code's formula, which never multiplies by g:
// e = r T^2 / (||T g|| + eps) (adaptive), or e = r / (||g|| + eps) per element.
std::shared_ptr<const Direction> released_direction(bool adaptive);

// Radii (docs/ALGORITHMS.md §3).
std::shared_ptr<const Radius> fixed_radius();  // each group's rho
// r = clamp(scale * d, 0, max_radius) with d measured in `region`.
std::shared_ptr<const Radius> trust_region_radius(TrustRegion region);

// Parameter sets (all start at θ0).
std::shared_ptr<const ParameterSet> previous_parameters();    // θt-1
std::shared_ptr<const ParameterSet> pretrained_parameters();  // θ0
std::shared_ptr<const ParameterSet> ema_parameters(double decay);  // EMA after every base step
// θ̄ <- decay θ̄ + (1 - decay) w before every base step (TRAM-EMA).
std::shared_ptr<const ParameterSet> history_parameters(double decay);

// Trust-region targets (docs/ALGORITHMS.md §4, §6).
// The model at a parameter set: its no-grad passes run before pass 1.
std::shared_ptr<const Target> parameter_set_target(std::shared_ptr<const ParameterSet> set);
std::shared_ptr<const Target> previous_target();    // TRAM-θt-1
std::shared_ptr<const Target> pretrained_target();  // TRAM-θ0
std::shared_ptr<const Target> history_target(double decay);  // TRAM-EMA
std::shared_ptr<const Target> noise_target(NoiseOptions noise);  // TRAM-ε: D(p(emb + z) || p)
// TRAM-Fisher's: pass 1 ran on noised embeddings; D(p(emb + z) || p(emb)),
// the clean side from one extra no-grad pass.
std::shared_ptr<const Target> clean_target();

// Distances (docs/ALGORITHMS.md §5).
std::shared_ptr<const Distance> kl_distance(ops::Divergence divergence, ops::Reduction reduction);
// mean (or sum) over valid rows of ||current - target|| on the logits;
// legacy divides the mean by the batch size once more.
std::shared_ptr<const Distance> l2_distance(ops::Reduction reduction);
// The biased MMD estimate with the rows as samples, O(rows^2 * classes);
// reduction mean or legacy (divided by the batch size once more).
std::shared_ptr<const Distance> mmd_distance(MMDKernel kernel, ops::Reduction reduction);

// Regularizers (docs/ALGORITHMS.md §7).
std::shared_ptr<const Regularizer> trpo_regularizer(double lambda);
std::shared_ptr<const Regularizer> r3f_regularizer(double lambda, NoiseOptions noise);
std::shared_ptr<const Regularizer> mesa_regularizer(double lambda, double ema_decay, double temperature);

// Gradient rules of the peers' SAM variants (docs/ALGORITHMS.md §16).
std::shared_ptr<const GradientRule> gsam_rule(double alpha);     // descent g_p - alpha g_perp
std::shared_ptr<const GradientRule> looksam_rule(double alpha);  // g_v reused between SAM steps
// SWP with probability beta from a hash of (seed, step, tensor); SDS keeps gamma of the rows.
std::shared_ptr<const GradientRule> esam_rule(double beta, double gamma, uint64_t seed);
// ESAM's draw for tensor `tensor` at step `step`: uniform in [0, 1).
double esam_uniform(uint64_t seed, int64_t step, size_t tensor);
std::shared_ptr<const GradientRule> friendly_sam_rule(double sigma, double lambda);  // d = g - sigma m
std::shared_ptr<const GradientRule> vasso_rule(double theta);  // d <- (1 - theta) d + theta g
std::shared_ptr<const GradientRule> wsam_rule(double gamma, bool decouple);

}  // namespace tram::policy
