// A method is a composition of policies (policy.h). The named optimizers
// (methods.h) and the factory (factory.h) build these; so can users, from
// the policies in policies.h or their own.
//
//   auto sam = tram::MethodConfig().name("SAM").direction(tram::policy::sam_direction());
#pragma once

#include <tram/options.h>
#include <tram/policies.h>
#include <tram/policy.h>

#include <torch/arg.h>

#include <memory>
#include <optional>
#include <string>

namespace tram {

struct MethodConfig {
  // Name used in every message ("SAM", "TRAM-θt-1", "ASAM+TRPO", ...) and
  // stored in checkpoints.
  TORCH_ARG(std::string, name) = "SAM";
  // The ascent direction; null for a method without ascent (the plain base,
  // or a regularizer alone), which takes one pass and the base step.
  TORCH_ARG(std::shared_ptr<const policy::Direction>, direction) = policy::sam_direction();
  // Where the ascent radius comes from: each group's rho, or a trust region.
  TORCH_ARG(std::shared_ptr<const policy::Radius>, radius) = policy::fixed_radius();
  // Optional loss regularizer, applied to every pass with gradient.
  TORCH_ARG(std::shared_ptr<const policy::Regularizer>, regularizer) = nullptr;
  // TRAM-Fisher: pass 1 runs on embeddings noised like this, and its gradient
  // g_z drives the ascent (docs/ALGORITHMS.md §6).
  TORCH_ARG(std::optional<NoiseOptions>, first_pass_noise) = std::nullopt;
  // The peers' changes to the gradients around the step (GSAM, LookSAM,
  // ESAM, F-SAM, VaSSO, WSAM); null for none.
  TORCH_ARG(std::shared_ptr<const policy::GradientRule>, gradient_rule) = nullptr;
  // Guards every division by a norm.
  TORCH_ARG(double, eps_norm) = 1e-12;
  // The sharpness-aware step (targets, ascent, pass 2) runs on the steps
  // t = 0, interval, 2 interval, ...; the others are one pass of the method's
  // loss (regularizer included) and a base step (docs/ALGORITHMS.md §1).
  TORCH_ARG(int64_t, interval) = 1;

 public:
  bool has_ascent() const { return direction_ != nullptr; }
  // Whether step `t` (counted from 0) runs the ascent.
  bool ascends_at(int64_t t) const { return has_ascent() && t % interval_ == 0; }
  // The trust region the radius is measured in, or null.
  const policy::TrustRegion* trust_region() const { return radius_ ? radius_->trust_region() : nullptr; }
  // True when step() needs the model's logits (ForwardClosure).
  bool needs_forward_closure() const;
  // Throws a c10::Error naming the method and the bad value.
  void validate() const;
};

}  // namespace tram
