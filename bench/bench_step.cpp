// tram-bench-step: end-to-end step time of every method on a GPT-2-small
// architecture (bench/gpt2.h), broken into its passes.
//
// The passes are timed once, on their own: a forward with gradient (the
// closure), its backward, a no-grad eval-mode forward (a trust-region
// target), and the base optimizer's step. Each method's closure counts the
// passes the method runs; its pass-count ideal is
//   grad_forwards * (forward + backward) + nograd_forwards * target_forward + base_step
// (every forward with gradient is backpropagated once, on its own or inside
// a regularized loss), and its optimizer overhead is the step time minus
// that. The target is step <= 1.05 x ideal. "plain" is a LibTorch loop
// without tram (zero_grad, forward, backward, Adam step): the baseline a
// user has today.
#include "bench_common.h"
#include "gpt2.h"

#include <tram/tram.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace {

using torch::Tensor;
using namespace tram::bench;

struct PassCounter {
  int64_t with_grad = 0;
  int64_t without_grad = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const Flags flags(argc, argv,
                    {{"device", "cuda"},
                     {"out", "bench/out"},
                     {"batch", "16"},
                     {"seq", "1024"},
                     {"layers", "12"},
                     {"hidden", "768"},
                     {"heads", "12"},
                     {"vocab", "50257"},
                     {"dropout", "0.1"},
                     {"dtype", "fp32"},
                     {"tf32", "1"},
                     {"warmup", "2"},
                     {"iters", "5"},
                     {"methods", ""},
                     {"options", "lr=2e-5,beta1=0.9,beta2=0.99"},
                     {"small", "0"}},
                    "tram-bench-step: step time of every method on a GPT-2-small architecture.\n"
                    "--small: 2 layers, hidden 64, vocab 1000, batch 2 x 32 (a CPU smoke run).\n"
                    "--methods a,b,c: factory names (default: every name except sgd and adamw); a name may\n"
                    "  carry its own options after '@', ':'-separated: sam@interval=5, looksam@k=5:alpha=0.7.\n"
                    "--options: base-optimizer keys for tram::parse_options (base=adam is implied).");
  const torch::Device device = parse_device(flags.str("device"));
  const torch::ScalarType dtype = parse_dtype(flags.str("dtype"));
  const bool small = flags.flag("small");
  Gpt2Config config;
  config.vocab = small ? 1000 : flags.integer("vocab");
  config.layers = small ? 2 : flags.integer("layers");
  config.hidden = small ? 64 : flags.integer("hidden");
  config.heads = small ? 4 : flags.integer("heads");
  config.dropout = flags.number("dropout");
  const int64_t batch = small ? 2 : flags.integer("batch");
  const int64_t seq = small ? 32 : flags.integer("seq");
  config.positions = std::max<int64_t>(seq, small ? 32 : 1024);
  const int warmup = static_cast<int>(flags.integer("warmup"));
  const int iters = static_cast<int>(flags.integer("iters"));
  if (device.is_cuda() && flags.flag("tf32")) at::globalContext().setAllowTF32CuBLAS(true);

  std::vector<std::string> methods = flags.list("methods");
  if (methods.empty()) {
    for (const auto& name : tram::method_names()) {
      if (name != "sgd" && name != "adamw") methods.push_back(name);
    }
  }

  torch::manual_seed(0);
  Gpt2 model(config);
  model->to(device, dtype);
  int64_t parameters = 0;
  for (const auto& p : model->parameters()) parameters += p.numel();
  std::cout << "GPT-2 architecture: " << config.layers << " layers, hidden " << config.hidden << ", "
            << config.heads << " heads, vocab " << config.vocab << ", " << parameters
            << " parameters, " << dtype_name(dtype) << (device.is_cuda() && flags.flag("tf32") ? " (TF32 matmuls)" : "")
            << "; batch " << batch << " x " << seq << " tokens on " << device << "\n";

  // Next-token prediction: labels are the inputs shifted left; the last
  // position has no label, and the mask keeps it out of every divergence, so
  // the full logits tensor is used as is (no copy of a shifted view).
  const auto long_options = torch::TensorOptions().device(device).dtype(torch::kLong);
  const Tensor ids = torch::randint(0, config.vocab, {batch, seq}, long_options);
  const Tensor labels =
      torch::cat({ids.slice(1, 1), torch::full({batch, 1}, -100, long_options)}, 1).reshape({-1});
  const Tensor mask = torch::ones({batch, seq}, torch::TensorOptions().device(device).dtype(torch::kBool))
                          .index_put_({torch::indexing::Slice(), seq - 1}, false);

  auto forward = [&](const tram::Pass& pass, PassCounter* counter) -> tram::PassOutput {
    if (counter != nullptr) ++(pass.requires_grad() ? counter->with_grad : counter->without_grad);
    const Tensor logits = model->logits_from_embeddings(pass.perturb(model->embed(ids)));
    const Tensor loss = torch::nn::functional::cross_entropy(
        logits.view({-1, config.vocab}), labels,
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
    return {loss, logits, mask};
  };

  // --- the passes on their own ----------------------------------------------
  const tram::Pass clean(tram::PassKind::kClean, std::nullopt, nullptr);
  const tram::Pass target(tram::PassKind::kTarget, std::nullopt, nullptr);
  // The passes are cheap next to the whole benchmark: time them with more
  // repetitions than the steps. The backward is timed on its own, after an
  // untimed forward.
  const int pass_iters = std::max(iters, 10);
  model->train();
  const double forward_ms = median_ms(device, warmup, pass_iters, [&] { forward(clean, nullptr); });
  Tensor pending_loss;
  const double backward_ms = median_ms(
      device, warmup, pass_iters,
      [&] {
        pending_loss.backward();
        pending_loss = Tensor();
      },
      [&] {
        model->zero_grad();  // gradients undefined before pass 1, as after the optimizers' zero_grad
        pending_loss = forward(clean, nullptr).loss;
      });
  model->zero_grad();
  double target_ms = 0.0;
  {
    model->eval();
    torch::NoGradGuard no_grad;
    target_ms = median_ms(device, warmup, pass_iters, [&] { forward(target, nullptr); });
    model->train();
  }
  const tram::OptionMap base_options = tram::parse_options(flags.str("options"));
  double base_ms = 0.0;
  double plain_ms = 0.0;
  int64_t plain_peak = -1;
  {
    auto adam = tram::make_base("adam", {torch::optim::OptimizerParamGroup(model->parameters())},
                                base_options);
    forward(clean, nullptr).loss.backward();
    base_ms = median_ms(device, warmup, pass_iters, [&] { adam->step(); });
    adam->zero_grad();
    reset_peak_memory(device);
    plain_ms = median_ms(device, warmup, iters, [&] {
      adam->zero_grad();
      forward(clean, nullptr).loss.backward();
      adam->step();
    });
    plain_peak = peak_memory_bytes(device);
    adam->zero_grad();
  }
  release_cached_memory(device);
  std::cout << "passes: forward " << fixed(forward_ms, 2) << " ms, backward " << fixed(backward_ms, 2)
            << " ms, no-grad target forward " << fixed(target_ms, 2) << " ms, Adam step "
            << fixed(base_ms, 2) << " ms; plain LibTorch step " << fixed(plain_ms, 2) << " ms\n";

  // Methods whose steps differ (interval, LookSAM) are timed step by step:
  // step_ms is then the mean over the timed steps (whose pass counts the ideal
  // averages), and offstep_ms the median of the one-pass steps, whose target
  // is the plain loop's step (offstep_over_plain <= 1.1).
  Table table({"method", "grad_forwards", "nograd_forwards", "step_ms", "forward_ms", "backward_ms",
               "base_ms", "overhead_ms", "ideal_ms", "step_over_ideal", "step_over_plain",
               "offstep_ms", "offstep_over_plain", "peak_GiB"});
  const bool has_memory = plain_peak >= 0;
  const double gib = 1024.0 * 1024.0 * 1024.0;
  table.add({"plain (LibTorch loop, no tram)", "1", "0", fixed(plain_ms, 2), fixed(forward_ms, 2),
             fixed(backward_ms, 2), fixed(base_ms, 2),
             fixed(plain_ms - forward_ms - backward_ms - base_ms, 2),
             fixed(forward_ms + backward_ms + base_ms, 2),
             fixed(plain_ms / (forward_ms + backward_ms + base_ms), 3), "1.000", "", "",
             fixed_or_blank(static_cast<double>(plain_peak) / gib, 2, has_memory)});

  // --- every method ------------------------------------------------------------
  for (const auto& spec : methods) {
    std::cout << spec << "...\n" << std::flush;
    reset_peak_memory(device);
    const std::string method = spec.substr(0, spec.find('@'));
    try {
      tram::OptionMap options = base_options;
      if (spec.find('@') != std::string::npos) {
        std::string own = spec.substr(spec.find('@') + 1);
        std::replace(own.begin(), own.end(), ':', ',');
        for (const auto& [key, value] : tram::parse_options(own)) options[key] = value;
      }
      const bool plain_base = method == "sgd" || method == "adam" || method == "adamw";
      if (!plain_base) options["base"] = std::string("adam");
      auto optimizer = tram::make_optimizer(method, model->parameters(), options);
      optimizer->set_module(model.ptr());
      PassCounter counter;
      const tram::ForwardClosure closure = [&](const tram::Pass& pass) {
        return forward(pass, &counter);
      };
      std::vector<int> passes;  // per call, warm-up included
      const auto times = time_calls(device, warmup, iters, [&] { passes.push_back(optimizer->step(closure).passes); });
      const std::vector<int> timed(passes.end() - static_cast<std::ptrdiff_t>(times.size()), passes.end());
      const bool uniform = std::all_of(timed.begin(), timed.end(), [&](int n) { return n == timed.front(); });
      std::vector<double> offsteps;
      for (size_t i = 0; i < times.size(); ++i) {
        if (timed[i] == 1 && !uniform) offsteps.push_back(times[i]);
      }
      double mean_ms = 0;
      for (double t : times) mean_ms += t / static_cast<double>(times.size());
      const double step_ms = uniform ? median(times) : mean_ms;
      const double offstep_ms = median(offsteps);
      const int64_t peak = peak_memory_bytes(device);
      const double steps = warmup + iters;
      const double grad_forwards = static_cast<double>(counter.with_grad) / steps;
      const double nograd_forwards = static_cast<double>(counter.without_grad) / steps;
      const double method_forward_ms = grad_forwards * forward_ms + nograd_forwards * target_ms;
      const double method_backward_ms = grad_forwards * backward_ms;
      const double ideal_ms = method_forward_ms + method_backward_ms + base_ms;
      table.add({spec, fixed(grad_forwards, 1), fixed(nograd_forwards, 1), fixed(step_ms, 2),
                 fixed(method_forward_ms, 2), fixed(method_backward_ms, 2), fixed(base_ms, 2),
                 fixed(step_ms - ideal_ms, 2), fixed(ideal_ms, 2), fixed(step_ms / ideal_ms, 3),
                 fixed(step_ms / plain_ms, 3), fixed_or_blank(offstep_ms, 2, !offsteps.empty()),
                 fixed_or_blank(offstep_ms / plain_ms, 3, !offsteps.empty()),
                 fixed_or_blank(static_cast<double>(peak) / gib, 2, has_memory)});
    } catch (const c10::Error& error) {
      // Out of memory at this batch (R3F and the TRAM variants hold more
      // logits than the base): record it and go on with the next method.
      const std::string message = error.what_without_backtrace();
      std::cerr << spec << " failed: " << message.substr(0, 300) << "\n";
      const bool oom = message.find("out of memory") != std::string::npos;
      table.add({spec, "", "", oom ? "OOM" : "error", "", "", "", "", "", "", "", "", "", ""});
    }
    model->zero_grad();
    release_cached_memory(device);
  }

  std::cout << "\n";
  table.print(std::cout);
  const std::string csv = output_path(flags.str("out"), "step.csv");
  table.write_csv(csv);
  std::cout << "\nwrote " << csv << "\n";
  return 0;
}
