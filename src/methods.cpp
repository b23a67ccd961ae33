// The named methods as policy compositions (SPEC 2-5). Defaults live in the
// options structs of methods.h; this file only says which policies each uses.
#include <tram/methods.h>

namespace tram {

namespace {
std::pair<MethodConfig, GroupOptions> composed(MethodConfig method, GroupOptions group) {
  return {std::move(method), std::move(group)};
}

const char* tram_name(Target target) {
  switch (target) {
    case Target::kPrevious: return "TRAM-θt-1";
    case Target::kPretrained: return "TRAM-θ0";
    case Target::kNoise: return "TRAM-ε";
    case Target::kNone: break;
  }
  return "TRAM";
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
  return composed(MethodConfig().name("SAM").ascent(Ascent::kSAM).eps_norm(o.eps_norm()), GroupOptions().rho(o.rho()));
}

std::pair<MethodConfig, GroupOptions> compose(const ASAMOptions& o) {
  return composed(MethodConfig().name("ASAM").ascent(Ascent::kAdaptive).eps_norm(o.eps_norm()),
                  GroupOptions().rho(o.rho()).eta(o.eta()));
}

std::pair<MethodConfig, GroupOptions> compose(const FSAMOptions& o) {
  return composed(MethodConfig().name("FSAM").ascent(Ascent::kFisher).eps_norm(o.eps_norm()),
                  GroupOptions().rho(o.gamma()).fisher_eta(o.fisher_eta()));
}

std::pair<MethodConfig, GroupOptions> compose(const TRAMOptions& o) {
  TORCH_CHECK(o.target() != Target::kNone, "TRAM: target must be previous, pretrained or noise");
  auto trust_region = TrustRegionOptions()
                          .target(o.target())
                          .divergence(o.divergence())
                          .reduction(o.reduction())
                          .scale(o.scale())
                          .max_radius(o.max_radius())
                          .noise(o.noise());
  return composed(MethodConfig()
                      .name(tram_name(o.target()))
                      .ascent(Ascent::kAdaptive)
                      .formula(o.formula())
                      .radius(RadiusSource::kTrustRegion)
                      .trust_region(trust_region)
                      .eps_norm(o.eps_norm()),
                  GroupOptions().eta(o.eta()));
}

std::pair<MethodConfig, GroupOptions> compose(const TRAMFisherOptions& o) {
  auto trust_region = TrustRegionOptions()
                          .target(o.radius() == RadiusSource::kTrustRegion ? Target::kNoise : Target::kNone)
                          .divergence(o.divergence())
                          .reduction(o.reduction())
                          .scale(o.scale())
                          .max_radius(o.max_radius())
                          .noise(o.noise());
  return composed(MethodConfig()
                      .name("TRAM-Fisher")
                      .ascent(Ascent::kFisher)
                      .radius(o.radius())
                      .trust_region(trust_region)
                      .noisy_first_pass(true)
                      .eps_norm(o.eps_norm()),
                  GroupOptions().rho(o.gamma()).fisher_eta(o.fisher_eta()));
}

std::pair<MethodConfig, GroupOptions> compose(const RegularizerOptions& o) {
  TORCH_CHECK(o.kind() != Regularizer::kNone, "tram: a regularizer-only optimizer needs kind TRPO, R3F or MESA");
  return composed(MethodConfig().name(to_string(o.kind())).ascent(Ascent::kNone).regularizer(o), GroupOptions());
}

std::pair<MethodConfig, GroupOptions> with_regularizer(std::pair<MethodConfig, GroupOptions> method,
                                                       const RegularizerOptions& regularizer) {
  TORCH_CHECK(method.first.regularizer().kind() == Regularizer::kNone, method.first.name(),
              " already has a regularizer; combine one sharpness-aware method with one regularizer");
  if (regularizer.kind() == Regularizer::kNone) return method;
  method.first.name(method.first.name() + "+" + to_string(regularizer.kind())).regularizer(regularizer);
  return method;
}

}  // namespace tram
