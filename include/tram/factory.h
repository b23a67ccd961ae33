// Choosing a method by name, so that programs select an optimizer with one flag:
//
//   auto opt = tram::make_optimizer("asam+trpo", model->parameters(),
//                                   tram::parse_options("base=adam,lr=2e-5,rho=0.5"));
//
// Names: the plain bases "sgd", "adam", "adamw"; the sharpness-aware methods
// "sam", "asam", "fsam"; the TRAM family "tram-prev", "tram-pre", "tram-ema", "tram-noise",
// "tram-fisher"; the peers' variants "gsam", "looksam", "esam", "friendly-sam",
// "vasso", "wsam"; the trust-region regularizers "trpo", "r3f", "mesa"; and a
// sharpness-aware method combined with a regularizer, "asam+trpo", "sam+r3f".
#pragma once

#include <tram/optimizer.h>

#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace tram {

using OptionValue = std::variant<double, std::string>;
using OptionMap = std::map<std::string, OptionValue>;

// "k1=v1,k2=v2" (commas or whitespace between pairs): numbers become doubles,
// anything else stays a string. Throws on a pair without '='.
OptionMap parse_options(const std::string& text);

// Every factory name, in a stable order (for --help texts and error messages).
const std::vector<std::string>& method_names();
// The plain base optimizers among them: "sgd", "adam", "adamw".
const std::vector<std::string>& base_names();

// The option keys `method` accepts (its own and the base optimizer's).
std::vector<std::string> option_keys(const std::string& method);

// The base optimizer: "sgd" (lr, momentum, dampening, weight_decay, nesterov),
// "adam" / "adamw" (lr, beta1, beta2, eps, weight_decay, amsgrad).
std::shared_ptr<torch::optim::Optimizer> make_base(const std::string& name,
                                                   std::vector<torch::optim::OptimizerParamGroup> groups,
                                                   const OptionMap& options);

// The full optimizer. Keys of `options`: "base" (default "sgd") and the base's
// keys, then the method's (see README): rho, eta, fisher_eta, eps_norm, scale,
// max_radius, divergence, kernel, reduction, sigma, noise, radius, formula, adaptive,
// target_decay, interval, lambda, reg_sigma, reg_noise, ema_decay, temperature; for the peers' variants
// alpha (gsam, looksam), k (looksam), beta, gamma, seed (esam), sigma, friendly_lambda
// (friendly-sam), theta (vasso), gamma, decouple (wsam). A plain base name returns a
// SharpnessAware with no ascent, which steps exactly like the base. Unknown
// names and keys are rejected with the list of valid ones.
std::unique_ptr<SharpnessAware> make_optimizer(const std::string& method,
                                               std::vector<torch::optim::OptimizerParamGroup> groups,
                                               const OptionMap& options = {});
std::unique_ptr<SharpnessAware> make_optimizer(const std::string& method,
                                               std::vector<torch::Tensor> params,
                                               const OptionMap& options = {});

// The MethodConfig and GroupOptions a factory name stands for, with `options`
// applied (base keys are ignored here).
std::pair<MethodConfig, GroupOptions> method_config(const std::string& method,
                                                    const OptionMap& options = {});

}  // namespace tram
