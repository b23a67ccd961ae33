// The named methods as policy compositions (docs/ALGORITHMS.md §2-7): the one
// place where a method's name meets its policies. Defaults live in the
// options structs of methods.h.
#include <tram/methods.h>

#include <tram/policies.h>

namespace tram {

namespace {
std::pair<MethodConfig, GroupOptions> composed(MethodConfig method, GroupOptions group) {
  return {std::move(method), std::move(group)};
}

const char* tram_name(Target target) {
  switch (target) {
    case Target::kPrevious: return "TRAM-θt-1";
    case Target::kPretrained: return "TRAM-θ0";
    case Target::kHistory: return "TRAM-EMA";
    case Target::kNoise: return "TRAM-ε";
  }
  return "TRAM";
}

std::shared_ptr<const policy::Target> target_of(const TrustRegionOptions& o) {
  switch (o.target()) {
    case Target::kPrevious: return policy::previous_target();
    case Target::kPretrained: return policy::pretrained_target();
    case Target::kHistory: return policy::history_target(o.target_decay());
    case Target::kNoise: return policy::noise_target(o.noise());
  }
  TORCH_CHECK(false, "TRAM: unknown trust-region target ", static_cast<int>(o.target()));
}

std::shared_ptr<const policy::Distance> distance_of(const TrustRegionOptions& o) {
  switch (o.distance()) {
    case TrustRegionDistance::kKL: return policy::kl_distance(o.divergence(), o.reduction());
    case TrustRegionDistance::kL2: return policy::l2_distance(o.reduction());
    case TrustRegionDistance::kMMD: return policy::mmd_distance(o.kernel(), o.reduction());
  }
  TORCH_CHECK(false, "TRAM: unknown trust-region distance ", static_cast<int>(o.distance()));
}

std::shared_ptr<const policy::Radius> trust_region_radius(std::shared_ptr<const policy::Target> target,
                                                          const TrustRegionOptions& o) {
  return policy::trust_region_radius({std::move(target), distance_of(o), o.scale(), o.max_radius()});
}

std::shared_ptr<const policy::Direction> tram_direction(const TRAMOptions& o) {
  if (o.formula() == AscentFormula::kReleased) return policy::released_direction(o.adaptive());
  return o.adaptive() ? policy::adaptive_direction() : policy::sam_direction();
}
}  // namespace

const char* to_string(Regularizer kind) {
  switch (kind) {
    case Regularizer::kTRPO: return "TRPO";
    case Regularizer::kR3F: return "R3F";
    case Regularizer::kMESA: return "MESA";
    case Regularizer::kNone: break;
  }
  return "none";
}

std::pair<MethodConfig, GroupOptions> compose(const SAMOptions& o) {
  return composed(MethodConfig().name("SAM").direction(policy::sam_direction()).eps_norm(o.eps_norm()),
                  GroupOptions().rho(o.rho()));
}

std::pair<MethodConfig, GroupOptions> compose(const ASAMOptions& o) {
  return composed(MethodConfig().name("ASAM").direction(policy::adaptive_direction()).eps_norm(o.eps_norm()),
                  GroupOptions().rho(o.rho()).eta(o.eta()));
}

std::pair<MethodConfig, GroupOptions> compose(const FSAMOptions& o) {
  return composed(MethodConfig().name("FSAM").direction(policy::fisher_direction()).eps_norm(o.eps_norm()),
                  GroupOptions().rho(o.gamma()).fisher_eta(o.fisher_eta()));
}

std::pair<MethodConfig, GroupOptions> compose(const TRAMOptions& o) {
  const auto& region = o.trust_region();
  return composed(MethodConfig()
                      .name(tram_name(region.target()))
                      .direction(tram_direction(o))
                      .radius(trust_region_radius(target_of(region), region))
                      .eps_norm(o.eps_norm()),
                  GroupOptions().eta(o.eta()));
}

std::pair<MethodConfig, GroupOptions> compose(const TRAMFisherOptions& o) {
  const auto& region = o.trust_region();
  TORCH_CHECK(region.target() == Target::kNoise, "TRAM-Fisher: its trust region is measured on noised inputs; "
              "trust_region.target must be Target::kNoise (got ", tram_name(region.target()), ")");
  auto radius = o.radius() == RadiusSource::kTrustRegion ? trust_region_radius(policy::clean_target(), region)
                                                         : policy::fixed_radius();
  return composed(MethodConfig()
                      .name("TRAM-Fisher")
                      .direction(policy::fisher_direction())
                      .radius(std::move(radius))
                      .first_pass_noise(region.noise())
                      .eps_norm(o.eps_norm()),
                  GroupOptions().rho(o.gamma()).fisher_eta(o.fisher_eta()));
}

namespace {
// A peer's method: SAM's (or ASAM's) ascent with radius rho, and its rule.
template <class Options>
std::pair<MethodConfig, GroupOptions> peer(const char* name, const Options& o,
                                           std::shared_ptr<const policy::GradientRule> rule) {
  return composed(MethodConfig()
                      .name(name)
                      .direction(o.adaptive() ? policy::adaptive_direction() : policy::sam_direction())
                      .gradient_rule(std::move(rule))
                      .eps_norm(o.eps_norm()),
                  GroupOptions().rho(o.rho()).eta(o.eta()));
}
}  // namespace

std::pair<MethodConfig, GroupOptions> compose(const GSAMOptions& o) {
  return peer("GSAM", o, policy::gsam_rule(o.alpha()));
}

std::pair<MethodConfig, GroupOptions> compose(const LookSAMOptions& o) {
  auto method = peer("LookSAM", o, policy::looksam_rule(o.alpha()));
  TORCH_CHECK(o.k() >= 1, "LookSAM: invalid k: ", o.k(), " (the SAM step runs every k-th step; k must be an "
              "integer >= 1, the paper uses 5)");
  method.first.interval(o.k());
  return method;
}

std::pair<MethodConfig, GroupOptions> compose(const ESAMOptions& o) {
  return peer("ESAM", o, policy::esam_rule(o.beta(), o.gamma(), o.seed()));
}

std::pair<MethodConfig, GroupOptions> compose(const FriendlySAMOptions& o) {
  return peer("FriendlySAM", o, policy::friendly_sam_rule(o.sigma(), o.lambda()));
}

std::pair<MethodConfig, GroupOptions> compose(const VaSSOOptions& o) {
  return peer("VaSSO", o, policy::vasso_rule(o.theta()));
}

std::pair<MethodConfig, GroupOptions> compose(const WSAMOptions& o) {
  return peer("WSAM", o, policy::wsam_rule(o.gamma(), o.decouple()));
}

namespace {
std::shared_ptr<const policy::Regularizer> regularizer_of(const RegularizerOptions& o) {
  switch (o.kind()) {
    case Regularizer::kTRPO: return policy::trpo_regularizer(o.lambda());
    case Regularizer::kR3F: return policy::r3f_regularizer(o.lambda(), o.noise());
    case Regularizer::kMESA: return policy::mesa_regularizer(o.lambda(), o.ema_decay(), o.temperature());
    case Regularizer::kNone: break;
  }
  return nullptr;
}
}  // namespace

std::pair<MethodConfig, GroupOptions> compose(const RegularizerOptions& o) {
  TORCH_CHECK(o.kind() != Regularizer::kNone, "tram: a regularizer-only optimizer needs kind TRPO, R3F or MESA");
  return composed(MethodConfig().name(to_string(o.kind())).direction(nullptr).regularizer(regularizer_of(o)),
                  GroupOptions());
}

std::pair<MethodConfig, GroupOptions> with_regularizer(std::pair<MethodConfig, GroupOptions> method,
                                                       const RegularizerOptions& regularizer) {
  TORCH_CHECK(method.first.regularizer() == nullptr, method.first.name(),
              " already has a regularizer; combine one sharpness-aware method with one regularizer");
  if (regularizer.kind() == Regularizer::kNone) return method;
  method.first.name(method.first.name() + "+" + to_string(regularizer.kind())).regularizer(regularizer_of(regularizer));
  return method;
}

}  // namespace tram
