// Methods by name. Each option is read through OptionReader, which records the
// keys it was asked for: the list of valid keys in an error message is
// therefore always the list the code actually reads.
#include <tram/factory.h>

#include <tram/methods.h>

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>
#include <sstream>

namespace tram {

namespace {

const std::vector<std::string> kBases = {"sgd", "adam", "adamw"};
const std::vector<std::string> kAscents = {"sam",      "asam",         "fsam",     "tram-prev", "tram-pre",
                                           "tram-ema", "tram-noise",   "tram-fisher", "gsam",   "looksam",
                                           "esam",     "friendly-sam", "vasso",    "wsam"};
const std::vector<std::string> kRegularizers = {"trpo", "r3f", "mesa"};

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

class OptionReader {
 public:
  OptionReader(const OptionMap& options, std::string method) : options_(options), method_(std::move(method)) {}

  double number(const std::string& key, double fallback) {
    asked_.insert(key);
    auto it = options_.find(key);
    if (it == options_.end()) return fallback;
    const auto* value = std::get_if<double>(&it->second);
    TORCH_CHECK(value != nullptr, method_, ": option '", key, "' must be a number, got '",
                std::get<std::string>(it->second), "'");
    return *value;
  }

  int64_t integer(const std::string& key, int64_t fallback) {
    const double value = number(key, static_cast<double>(fallback));
    TORCH_CHECK(std::floor(value) == value && std::abs(value) < 9e15, method_, ": option '", key,
                "' must be an integer, got ", value);
    return static_cast<int64_t>(value);
  }

  std::optional<double> optional_number(const std::string& key) {
    asked_.insert(key);
    if (options_.find(key) == options_.end()) return std::nullopt;
    return number(key, 0.0);
  }

  bool flag(const std::string& key, bool fallback) {
    asked_.insert(key);
    auto it = options_.find(key);
    if (it == options_.end()) return fallback;
    if (const auto* value = std::get_if<double>(&it->second)) return *value != 0.0;
    const auto& text = std::get<std::string>(it->second);
    TORCH_CHECK(text == "true" || text == "false", method_, ": option '", key, "' must be true/false or 1/0, got '",
                text, "'");
    return text == "true";
  }

  // One of `choices`, returned as its index.
  size_t choice(const std::string& key, const std::vector<std::string>& choices, size_t fallback) {
    asked_.insert(key);
    auto it = options_.find(key);
    if (it == options_.end()) return fallback;
    const auto* text = std::get_if<std::string>(&it->second);
    TORCH_CHECK(text != nullptr && contains(choices, *text), method_, ": option '", key, "' must be one of ",
                join(choices), "; got '",
                text ? *text : std::to_string(std::get<double>(it->second)), "'");
    return static_cast<size_t>(std::find(choices.begin(), choices.end(), *text) - choices.begin());
  }

  // Every key given must have been read by the method or its base.
  void finish() const {
    for (const auto& [key, value] : options_) {
      TORCH_CHECK(asked_.count(key) != 0, method_, ": unknown option '", key, "'; valid options: ",
                  join(keys()));
    }
  }

  std::vector<std::string> keys() const { return {asked_.begin(), asked_.end()}; }
  const std::string& method() const { return method_; }

 private:
  const OptionMap& options_;
  std::string method_;
  std::set<std::string> asked_;
};

NoiseOptions read_noise(OptionReader& in, const std::string& prefix, NoiseOptions noise) {
  const size_t kind = in.choice(prefix + "noise", {"normal", "uniform"},
                                noise.distribution() == NoiseDistribution::kNormal ? 0 : 1);
  return noise.distribution(kind == 0 ? NoiseDistribution::kNormal : NoiseDistribution::kUniform)
      .sigma(in.number(prefix + "sigma", noise.sigma()));
}

// divergence= names the trust-region distance: a KL direction, l2 or mmd
// (whose kernel= is read only with it, and rejected without it).
TrustRegionOptions read_distance(OptionReader& in, TrustRegionOptions o) {
  const std::vector<std::string> names = {ops::to_string(ops::Divergence::kForward),
                                          ops::to_string(ops::Divergence::kReverse),
                                          ops::to_string(ops::Divergence::kSymmetric), "l2", "mmd"};
  const size_t fallback = o.distance() == TrustRegionDistance::kL2    ? 3
                          : o.distance() == TrustRegionDistance::kMMD ? 4
                                                                      : static_cast<size_t>(o.divergence());
  const size_t choice = in.choice("divergence", names, fallback);
  if (choice < 3) o.distance(TrustRegionDistance::kKL).divergence(static_cast<ops::Divergence>(choice));
  if (choice == 3) o.distance(TrustRegionDistance::kL2);
  if (choice == 4) o.distance(TrustRegionDistance::kMMD);
  const std::vector<std::string> kernels = {"imq2", "imq", "imq3", "rbf"};
  const size_t not_given = kernels.size();
  const size_t kernel = in.choice("kernel", kernels, not_given);
  if (kernel != not_given) {
    TORCH_CHECK(o.distance() == TrustRegionDistance::kMMD, in.method(), ": option 'kernel' applies to divergence=mmd "
                "only; add divergence=mmd or drop kernel=");
    o.kernel(static_cast<MMDKernel>(kernel));
  }
  return o;
}

ops::Reduction read_reduction(OptionReader& in, ops::Reduction fallback) {
  const std::vector<std::string> names = {ops::to_string(ops::Reduction::kNone), ops::to_string(ops::Reduction::kMean),
                                          ops::to_string(ops::Reduction::kSum), ops::to_string(ops::Reduction::kLegacy)};
  const auto reduction = static_cast<ops::Reduction>(in.choice("reduction", names, static_cast<size_t>(fallback)));
  TORCH_CHECK(reduction != ops::Reduction::kNone, "tram: reduction=none gives one distance per row; the trust-region "
              "radius needs mean, sum or legacy");
  return reduction;
}

// The trust region's keys; the noise keys only where the target is noised
// inputs (TRAM-ε, TRAM-Fisher).
TrustRegionOptions read_trust_region(OptionReader& in, TrustRegionOptions o) {
  o = read_distance(in, o);
  o.reduction(read_reduction(in, o.reduction()));
  o.scale(in.number("scale", o.scale())).max_radius(in.optional_number("max_radius"));
  if (o.target() == Target::kNoise) o.noise(read_noise(in, "", o.noise()));
  if (o.target() == Target::kHistory) o.target_decay(in.number("target_decay", o.target_decay()));
  return o;
}

RegularizerOptions read_regularizer(OptionReader& in, const std::string& name) {
  RegularizerOptions o;
  o.kind(name == "trpo" ? Regularizer::kTRPO : name == "r3f" ? Regularizer::kR3F : Regularizer::kMESA);
  o.lambda(in.number("lambda", o.lambda()));
  if (o.kind() == Regularizer::kR3F) o.noise(read_noise(in, "reg_", o.noise()));
  if (o.kind() == Regularizer::kMESA) {
    o.ema_decay(in.number("ema_decay", o.ema_decay()));
    o.temperature(in.number("temperature", o.temperature()));
  }
  return o;
}

// The keys every peer's method shares: rho, adaptive (with eta), eps_norm.
template <class Options>
Options read_peer(OptionReader& in, Options o) {
  o.rho(in.number("rho", o.rho())).adaptive(in.flag("adaptive", o.adaptive()));
  return o.eta(in.number("eta", o.eta())).eps_norm(in.number("eps_norm", o.eps_norm()));
}

std::pair<MethodConfig, GroupOptions> read_ascent(OptionReader& in, const std::string& name) {
  if (name == "gsam") {
    GSAMOptions o = read_peer(in, GSAMOptions());
    return compose(o.alpha(in.number("alpha", o.alpha())));
  }
  if (name == "looksam") {
    LookSAMOptions o = read_peer(in, LookSAMOptions());
    return compose(o.k(in.integer("k", o.k())).alpha(in.number("alpha", o.alpha())));
  }
  if (name == "esam") {
    ESAMOptions o = read_peer(in, ESAMOptions());
    const int64_t seed = in.integer("seed", static_cast<int64_t>(o.seed()));
    TORCH_CHECK(seed >= 0, in.method(), ": invalid seed: ", seed, " (SWP's seed must be an integer >= 0)");
    return compose(o.beta(in.number("beta", o.beta())).gamma(in.number("gamma", o.gamma()))
                       .seed(static_cast<uint64_t>(seed)));
  }
  if (name == "friendly-sam") {
    FriendlySAMOptions o = read_peer(in, FriendlySAMOptions());
    return compose(o.sigma(in.number("sigma", o.sigma())).lambda(in.number("friendly_lambda", o.lambda())));
  }
  if (name == "vasso") {
    VaSSOOptions o = read_peer(in, VaSSOOptions());
    return compose(o.theta(in.number("theta", o.theta())));
  }
  if (name == "wsam") {
    WSAMOptions o = read_peer(in, WSAMOptions());
    return compose(o.gamma(in.number("gamma", o.gamma())).decouple(in.flag("decouple", o.decouple())));
  }
  if (name == "sam") {
    SAMOptions o;
    return compose(o.rho(in.number("rho", o.rho())).eps_norm(in.number("eps_norm", o.eps_norm())));
  }
  if (name == "asam") {
    ASAMOptions o;
    return compose(o.rho(in.number("rho", o.rho())).eta(in.number("eta", o.eta()))
                       .eps_norm(in.number("eps_norm", o.eps_norm())));
  }
  if (name == "fsam") {
    FSAMOptions o;
    return compose(o.gamma(in.number("gamma", o.gamma())).fisher_eta(in.number("fisher_eta", o.fisher_eta()))
                       .eps_norm(in.number("eps_norm", o.eps_norm())));
  }
  if (name == "tram-fisher") {
    TRAMFisherOptions o;
    o.gamma(in.number("gamma", o.gamma())).fisher_eta(in.number("fisher_eta", o.fisher_eta()));
    o.radius(in.choice("radius", {"fixed", "trust_region"}, 0) == 0 ? RadiusSource::kFixed
                                                                    : RadiusSource::kTrustRegion);
    o.trust_region(read_trust_region(in, o.trust_region()));
    return compose(o.eps_norm(in.number("eps_norm", o.eps_norm())));
  }
  TRAMOptions o;
  auto region = o.trust_region();
  region.target(name == "tram-prev"  ? Target::kPrevious
                : name == "tram-pre" ? Target::kPretrained
                : name == "tram-ema" ? Target::kHistory
                                     : Target::kNoise);
  o.trust_region(read_trust_region(in, region));
  o.eta(in.number("eta", o.eta())).adaptive(in.flag("adaptive", o.adaptive()));
  o.formula(in.choice("formula", {"paper", "released"}, 0) == 0 ? AscentFormula::kPaper : AscentFormula::kReleased);
  o.eps_norm(in.number("eps_norm", o.eps_norm()));
  return compose(o);
}

std::string upper(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

std::pair<MethodConfig, GroupOptions> read_method(OptionReader& in, const std::string& method) {
  const auto plus = method.find('+');
  const std::string head = method.substr(0, plus);
  const std::string tail = plus == std::string::npos ? "" : method.substr(plus + 1);
  const bool valid = (contains(kBases, head) && tail.empty()) || (contains(kRegularizers, head) && tail.empty()) ||
                     (contains(kAscents, head) && (tail.empty() || contains(kRegularizers, tail)));
  TORCH_CHECK(valid, "tram::make_optimizer: unknown method '", method, "'; valid: ", join(method_names()),
              ", or <ascent>+<regularizer> with ascent in {", join(kAscents), "} and regularizer in {",
              join(kRegularizers), "}");
  if (contains(kBases, head)) {
    return {MethodConfig().name(upper(head)).direction(nullptr), GroupOptions()};
  }
  if (contains(kRegularizers, head)) return compose(read_regularizer(in, head));
  auto composed = read_ascent(in, head);
  // LookSAM's k is its interval; a second key for it would be ambiguous.
  if (head != "looksam") composed.first.interval(in.integer("interval", composed.first.interval()));
  if (!tail.empty()) composed = with_regularizer(std::move(composed), read_regularizer(in, tail));
  return composed;
}

std::shared_ptr<torch::optim::Optimizer> read_base(OptionReader& in, const std::string& name,
                                                   std::vector<torch::optim::OptimizerParamGroup> groups) {
  TORCH_CHECK(contains(kBases, name), "tram::make_base: unknown base optimizer '", name, "'; valid: ", join(kBases));
  if (name == "sgd") {
    auto o = torch::optim::SGDOptions(in.number("lr", 0.01));
    o.momentum(in.number("momentum", o.momentum())).dampening(in.number("dampening", o.dampening()));
    o.weight_decay(in.number("weight_decay", o.weight_decay())).nesterov(in.flag("nesterov", o.nesterov()));
    return std::make_shared<torch::optim::SGD>(std::move(groups), o);
  }
  auto read_adam = [&](auto o) {
    o.lr(in.number("lr", o.lr()));
    o.betas({in.number("beta1", std::get<0>(o.betas())), in.number("beta2", std::get<1>(o.betas()))});
    o.eps(in.number("eps", o.eps())).weight_decay(in.number("weight_decay", o.weight_decay()));
    return o.amsgrad(in.flag("amsgrad", o.amsgrad()));
  };
  if (name == "adam") return std::make_shared<torch::optim::Adam>(std::move(groups), read_adam(torch::optim::AdamOptions()));
  return std::make_shared<torch::optim::AdamW>(std::move(groups), read_adam(torch::optim::AdamWOptions()));
}

std::string base_of(OptionReader& in, const std::string& method) {
  const std::string head = method.substr(0, method.find('+'));
  if (contains(kBases, head)) return head;
  return kBases[in.choice("base", kBases, 0)];
}

}  // namespace

OptionMap parse_options(const std::string& text) {
  OptionMap options;
  std::string normalized = text;
  std::replace(normalized.begin(), normalized.end(), ',', ' ');
  std::istringstream pairs(normalized);
  std::string pair;
  while (pairs >> pair) {
    const auto eq = pair.find('=');
    TORCH_CHECK(eq != std::string::npos && eq > 0, "tram::parse_options: '", pair, "' is not key=value");
    const std::string key = pair.substr(0, eq), value = pair.substr(eq + 1);
    char* end = nullptr;
    const double number = std::strtod(value.c_str(), &end);
    if (!value.empty() && end == value.c_str() + value.size()) {
      options[key] = number;
    } else {
      options[key] = value;
    }
  }
  return options;
}

const std::vector<std::string>& base_names() { return kBases; }

const std::vector<std::string>& method_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all = kBases;
    all.insert(all.end(), kAscents.begin(), kAscents.end());
    all.insert(all.end(), kRegularizers.begin(), kRegularizers.end());
    return all;
  }();
  return names;
}

std::vector<std::string> option_keys(const std::string& method) {
  OptionMap none;
  OptionReader in(none, method);
  const std::string base = base_of(in, method);
  read_method(in, method);
  // The base's keys, read against a throwaway base over no parameters.
  read_base(in, base, {});
  return in.keys();
}

std::shared_ptr<torch::optim::Optimizer> make_base(const std::string& name,
                                                   std::vector<torch::optim::OptimizerParamGroup> groups,
                                                   const OptionMap& options) {
  OptionReader in(options, name);
  auto base = read_base(in, name, std::move(groups));
  in.finish();
  return base;
}

std::pair<MethodConfig, GroupOptions> method_config(const std::string& method, const OptionMap& options) {
  OptionReader in(options, method);
  return read_method(in, method);
}

std::unique_ptr<SharpnessAware> make_optimizer(const std::string& method,
                                               std::vector<torch::optim::OptimizerParamGroup> groups,
                                               const OptionMap& options) {
  OptionReader in(options, method);
  const std::string base_name = base_of(in, method);
  auto [config, group] = read_method(in, method);
  auto base = read_base(in, base_name, std::move(groups));
  in.finish();
  return std::make_unique<SharpnessAware>(std::move(base), std::move(config), std::move(group));
}

std::unique_ptr<SharpnessAware> make_optimizer(const std::string& method, std::vector<torch::Tensor> params,
                                               const OptionMap& options) {
  return make_optimizer(method, std::vector<torch::optim::OptimizerParamGroup>{std::move(params)}, options);
}

}  // namespace tram
