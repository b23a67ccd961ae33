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
//
// --rounds R > 1 interleaves instead: for each method, R rounds of {one
// forward, one backward, one no-grad forward, one Adam step, one plain step,
// --iters method steps}, each round's ratio taken against the passes of its
// own round, and the medians (with the quartiles of the ratio) reported. On
// a shared machine whose speed drifts by tens of percent over minutes, that
// ratio is stable where the one-shot one is not.
//
// --phases: the time of each engine phase inside the method steps (the
// profiler scopes "tram::<phase>" the engine opens, caught with a
// RecordFunction callback), in phases.csv. On a GPU each phase boundary then
// synchronizes the device, so it is off there by default.
//
// Peak memory: the caching allocator's peak on a GPU; on the CPU the peak
// resident set (VmHWM, reset through /proc/self/clear_refs after malloc_trim
// gave freed memory back) above the resident set before the optimizer was
// built, so that it counts the optimizer's state as well.

#include "bench_common.h"
#include "gpt2.h"

#include <tram/tram.h>

#include <ATen/record_function.h>

#include <malloc.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
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

// --- engine phases ------------------------------------------------------------

// Milliseconds per "tram::<phase>" scope, summed while recording. Nested
// scopes (restore inside a skipped step) count in both.
struct PhaseClock {
  std::map<std::string, double> ms;
  bool synchronize = false;  // a GPU: wait for the device at each boundary
  torch::Device device = torch::kCPU;
};
PhaseClock phase_clock;

struct PhaseStart : at::ObserverContext {
  std::chrono::steady_clock::time_point start;
};

std::unique_ptr<at::ObserverContext> on_phase_start(const at::RecordFunction& fn) {
  if (std::string(fn.name()).rfind("tram::", 0) != 0) return nullptr;
  if (phase_clock.synchronize) synchronize(phase_clock.device);
  auto context = std::make_unique<PhaseStart>();
  context->start = std::chrono::steady_clock::now();
  return context;
}

void on_phase_end(const at::RecordFunction& fn, at::ObserverContext* context) {
  if (context == nullptr) return;
  if (phase_clock.synchronize) synchronize(phase_clock.device);
  const auto elapsed = std::chrono::steady_clock::now() - static_cast<PhaseStart*>(context)->start;
  phase_clock.ms[std::string(fn.name()).substr(6)] += std::chrono::duration<double, std::milli>(elapsed).count();
}

// Records the phases of the steps run while it lives.
class PhaseRecording {
 public:
  explicit PhaseRecording(bool on) {
    if (on) {
      handle_ = at::addThreadLocalCallback(
          at::RecordFunctionCallback(on_phase_start, on_phase_end).scopes({at::RecordScope::USER_SCOPE}));
    }
  }
  ~PhaseRecording() {
    if (handle_ != 0) at::removeCallback(handle_);
  }
  PhaseRecording(const PhaseRecording&) = delete;
  PhaseRecording& operator=(const PhaseRecording&) = delete;

 private:
  at::CallbackHandle handle_ = 0;
};

// --- CPU peak memory -----------------------------------------------------------

int64_t status_kib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

// The resident set now, after giving freed memory back, with the peak reset
// to it; -1 where /proc does not allow that.
int64_t reset_peak_resident_bytes() {
  malloc_trim(0);
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.close();
  if (!clear) return -1;
  const int64_t kib = status_kib("VmRSS");
  return kib < 0 ? -1 : kib * 1024;
}

int64_t peak_resident_bytes() {
  const int64_t kib = status_kib("VmHWM");
  return kib < 0 ? -1 : kib * 1024;
}

// Peak memory of what runs between begin() and end(): the device's peak, or
// on the CPU the peak resident set above the one at begin().
class PeakMemory {
 public:
  explicit PeakMemory(torch::Device device) : device_(device) {}
  void begin() {
    reset_peak_memory(device_);
    if (!device_.is_cuda()) baseline_ = reset_peak_resident_bytes();
  }
  int64_t end() const {
    if (device_.is_cuda()) return peak_memory_bytes(device_);
    const int64_t peak = peak_resident_bytes();
    return baseline_ < 0 || peak < 0 ? -1 : peak - baseline_;
  }

 private:
  torch::Device device_;
  int64_t baseline_ = -1;
};

double quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double at = q * static_cast<double>(values.size() - 1);
  const size_t low = static_cast<size_t>(at);
  const size_t high = std::min(low + 1, values.size() - 1);
  return values[low] + (at - static_cast<double>(low)) * (values[high] - values[low]);
}

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
                     {"rounds", "1"},
                     {"phases", ""},
                     {"methods", ""},
                     {"options", "lr=2e-5,beta1=0.9,beta2=0.99"},
                     {"small", "0"}},
                    "tram-bench-step: step time of every method on a GPT-2-small architecture.\n"
                    "--small: 2 layers, hidden 64, vocab 1000, batch 2 x 32 (a CPU smoke run).\n"
                    "--methods a,b,c: factory names (default: every name except sgd and adamw); a name may\n"
                    "  carry its own options after '@', ':'-separated: sam@interval=5, looksam@k=5:alpha=0.7.\n"
                    "--options: base-optimizer keys for tram::parse_options (base=adam is implied).\n"
                    "--rounds R > 1: per method, R interleaved rounds of each pass, the plain step and --iters\n"
                    "  method steps; ratios against the passes of the same round, medians and quartiles.\n"
                    "--phases 0|1: time the engine's phases inside the steps (phases.csv; default 1 on the CPU,\n"
                    "  0 on a GPU, where every phase boundary would synchronize the device).");
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
  const int rounds = static_cast<int>(flags.integer("rounds"));
  const bool phases = flags.str("phases").empty() ? !device.is_cuda() : flags.flag("phases");
  if (iters < 1 || rounds < 1) throw std::invalid_argument("--iters and --rounds must be at least 1");
  phase_clock.device = device;
  phase_clock.synchronize = device.is_cuda();
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
  // The plain loop's Adam (also the base step timed alone); it stays for the
  // rounds of --rounds.
  auto plain_adam = tram::make_base("adam", {torch::optim::OptimizerParamGroup(model->parameters())},
                                    base_options);
  {
    auto& adam = plain_adam;
    forward(clean, nullptr).loss.backward();
    base_ms = median_ms(device, warmup, pass_iters, [&] { adam->step(); });
    adam->zero_grad();
    plain_ms = median_ms(device, warmup, iters, [&] {
      adam->zero_grad();
      forward(clean, nullptr).loss.backward();
      adam->step();
    });
    adam->zero_grad();
  }
  {
    // The plain loop's peak, from a fresh Adam (its state counts, as a
    // method's does).
    PeakMemory memory(device);
    memory.begin();
    auto adam = tram::make_base("adam", {torch::optim::OptimizerParamGroup(model->parameters())},
                                base_options);
    for (int i = 0; i < std::max(warmup, 1); ++i) {
      adam->zero_grad();
      forward(clean, nullptr).loss.backward();
      adam->step();
    }
    plain_peak = memory.end();
    adam->zero_grad();
  }
  release_cached_memory(device);
  std::cout << "passes: forward " << fixed(forward_ms, 2) << " ms, backward " << fixed(backward_ms, 2)
            << " ms, no-grad target forward " << fixed(target_ms, 2) << " ms, Adam step "
            << fixed(base_ms, 2) << " ms; plain LibTorch step " << fixed(plain_ms, 2) << " ms\n";

  // One call of each pass and of the plain step, for a round of --rounds.
  struct RoundPasses {
    double forward = 0, backward = 0, target = 0, base = 0, plain = 0;
  };
  const auto time_once = [&](const std::function<void()>& fn, const std::function<void()>& setup = nullptr) {
    return time_calls(device, 0, 1, fn, setup).front();
  };
  const auto round_passes = [&](bool with_target) {
    RoundPasses r;
    r.forward = time_once([&] { forward(clean, nullptr); });
    r.backward = time_once(
        [&] {
          pending_loss.backward();
          pending_loss = Tensor();
        },
        [&] {
          model->zero_grad();
          pending_loss = forward(clean, nullptr).loss;
        });
    if (with_target) {
      model->eval();
      torch::NoGradGuard no_grad;
      r.target = time_once([&] { forward(target, nullptr); });
      model->train();
    }
    r.base = time_once([&] { plain_adam->step(); });  // on the backward's gradients
    r.plain = time_once([&] {
      plain_adam->zero_grad();
      forward(clean, nullptr).loss.backward();
      plain_adam->step();
    });
    plain_adam->zero_grad();
    return r;
  };

  // Methods whose steps differ (interval, LookSAM) are timed step by step:
  // step_ms is then the mean over the timed steps (whose pass counts the ideal
  // averages), and offstep_ms the median of the one-pass steps, whose target
  // is the plain loop's step (offstep_over_plain <= 1.1). With --rounds, each
  // round's ratios come from that round's passes and the columns are medians
  // over the rounds (ratio_q1 / ratio_q3: the quartiles of step_over_ideal).
  Table table({"method", "grad_forwards", "nograd_forwards", "step_ms", "forward_ms", "backward_ms",
               "base_ms", "overhead_ms", "ideal_ms", "step_over_ideal", "ratio_q1", "ratio_q3",
               "step_over_plain", "offstep_ms", "offstep_over_plain", "engine_ms", "peak_GiB",
               "peak_over_plain_GiB"});
  Table phase_table({"method", "phase", "ms_per_step", "share_of_step"});
  const bool has_memory = plain_peak >= 0;
  const double gib = 1024.0 * 1024.0 * 1024.0;
  table.add({"plain (LibTorch loop, no tram)", "1", "0", fixed(plain_ms, 2), fixed(forward_ms, 2),
             fixed(backward_ms, 2), fixed(base_ms, 2),
             fixed(plain_ms - forward_ms - backward_ms - base_ms, 2),
             fixed(forward_ms + backward_ms + base_ms, 2),
             fixed(plain_ms / (forward_ms + backward_ms + base_ms), 3), "", "", "1.000", "", "", "",
             fixed_or_blank(static_cast<double>(plain_peak) / gib, 2, has_memory), ""});
  // The phases that run no pass of the model: the optimizer's own work.
  const std::vector<std::string> engine_phases = {"ascent_gradient", "radius", "ascend", "restore",
                                                  "descent_gradient", "base_step"};

  // --- every method ------------------------------------------------------------
  for (const auto& spec : methods) {
    std::cout << spec << "...\n" << std::flush;
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
      PeakMemory memory(device);
      memory.begin();
      auto optimizer = tram::make_optimizer(method, model->parameters(), options);
      optimizer->set_module(model.ptr());
      PassCounter counter;
      const tram::ForwardClosure closure = [&](const tram::Pass& pass) {
        return forward(pass, &counter);
      };
      std::vector<int> passes;  // per timed call
      const auto one_step = [&] { passes.push_back(optimizer->step(closure).passes); };
      for (int i = 0; i < warmup; ++i) optimizer->step(closure);
      const bool uses_target = counter.without_grad > 0;
      phase_clock.ms.clear();

      std::vector<double> times;         // every timed step
      std::vector<double> round_steps;   // per round: mean step
      std::vector<double> round_ideals, round_ratios, round_plain_ratios;
      std::vector<double> round_grad, round_nograd;
      // Per round: the ideal's three parts, so that in --rounds mode the
      // columns are per-round medians like ideal_ms and step_over_ideal.
      std::vector<double> round_forward, round_backward, round_base;
      const int round_count = rounds > 1 ? rounds : 1;
      for (int r = 0; r < round_count; ++r) {
        RoundPasses own;
        if (rounds > 1) own = round_passes(uses_target);
        const PassCounter before = counter;
        std::vector<double> step_times;
        {
          const PhaseRecording recording(phases);
          step_times = time_calls(device, 0, iters, one_step);
        }
        times.insert(times.end(), step_times.begin(), step_times.end());
        const double grad = static_cast<double>(counter.with_grad - before.with_grad) / iters;
        const double nograd = static_cast<double>(counter.without_grad - before.without_grad) / iters;
        round_grad.push_back(grad);
        round_nograd.push_back(nograd);
        if (rounds > 1) {
          double mean = 0;
          for (double t : step_times) mean += t / static_cast<double>(step_times.size());
          round_forward.push_back(grad * own.forward + nograd * own.target);
          round_backward.push_back(grad * own.backward);
          round_base.push_back(own.base);
          const double ideal = round_forward.back() + round_backward.back() + own.base;
          round_steps.push_back(mean);
          round_ideals.push_back(ideal);
          round_ratios.push_back(mean / ideal);
          round_plain_ratios.push_back(mean / own.plain);
        }
      }
      const int64_t peak = memory.end();
      const std::vector<int> timed(passes.end() - static_cast<std::ptrdiff_t>(times.size()), passes.end());
      const bool uniform = std::all_of(timed.begin(), timed.end(), [&](int n) { return n == timed.front(); });
      std::vector<double> offsteps;
      for (size_t i = 0; i < times.size(); ++i) {
        if (timed[i] == 1 && !uniform) offsteps.push_back(times[i]);
      }
      double mean_ms = 0;
      for (double t : times) mean_ms += t / static_cast<double>(times.size());
      double grad_forwards = 0, nograd_forwards = 0;
      for (size_t r = 0; r < round_grad.size(); ++r) {
        grad_forwards += round_grad[r] / static_cast<double>(round_grad.size());
        nograd_forwards += round_nograd[r] / static_cast<double>(round_nograd.size());
      }
      double step_ms = uniform ? median(times) : mean_ms;
      double method_forward_ms = grad_forwards * forward_ms + nograd_forwards * target_ms;
      double method_backward_ms = grad_forwards * backward_ms;
      double method_base_ms = base_ms;
      double ideal_ms = method_forward_ms + method_backward_ms + base_ms;
      double ratio = step_ms / ideal_ms;
      double over_plain = step_ms / plain_ms;
      std::string q1, q3;
      if (rounds > 1) {
        step_ms = median(round_steps);
        ideal_ms = median(round_ideals);
        ratio = median(round_ratios);
        // Medians of each part: they sum to ideal_ms only up to the spread
        // between rounds (a median of sums is not the sum of medians).
        method_forward_ms = median(round_forward);
        method_backward_ms = median(round_backward);
        method_base_ms = median(round_base);
        over_plain = median(round_plain_ratios);
        q1 = fixed(quantile(round_ratios, 0.25), 3);
        q3 = fixed(quantile(round_ratios, 0.75), 3);
      }
      const double offstep_ms = median(offsteps);
      double engine_ms = 0;
      for (const auto& [phase, ms] : phase_clock.ms) {
        const double per_step = ms / static_cast<double>(times.size());
        if (std::find(engine_phases.begin(), engine_phases.end(), phase) != engine_phases.end()) {
          engine_ms += per_step;
        }
        phase_table.add({spec, phase, fixed(per_step, 3), fixed(per_step / mean_ms, 3)});
      }
      const bool peak_measured = has_memory && peak >= 0;
      table.add({spec, fixed(grad_forwards, 1), fixed(nograd_forwards, 1), fixed(step_ms, 2),
                 fixed(method_forward_ms, 2), fixed(method_backward_ms, 2), fixed(method_base_ms, 2),
                 fixed(step_ms - ideal_ms, 2), fixed(ideal_ms, 2), fixed(ratio, 3), q1, q3,
                 fixed(over_plain, 3), fixed_or_blank(offstep_ms, 2, !offsteps.empty()),
                 fixed_or_blank(offstep_ms / plain_ms, 3, !offsteps.empty()),
                 fixed_or_blank(engine_ms, 2, phases),
                 fixed_or_blank(static_cast<double>(peak) / gib, 2, peak_measured),
                 fixed_or_blank(static_cast<double>(peak - plain_peak) / gib, 3, peak_measured)});
    } catch (const c10::Error& error) {
      // Out of memory at this batch (R3F and the TRAM variants hold more
      // logits than the base): record it and go on with the next method.
      const std::string message = error.what_without_backtrace();
      std::cerr << spec << " failed: " << message.substr(0, 300) << "\n";
      const bool oom = message.find("out of memory") != std::string::npos;
      table.add({spec, "", "", oom ? "OOM" : "error", "", "", "", "", "", "", "", "", "", "", "", "", "", ""});
    }
    model->zero_grad();
    release_cached_memory(device);
  }

  std::cout << "\n";
  table.print(std::cout);
  const std::string csv = output_path(flags.str("out"), "step.csv");
  table.write_csv(csv);
  std::cout << "\nwrote " << csv << "\n";
  if (phases) {
    std::cout << "\n";
    phase_table.print(std::cout);
    const std::string phase_csv = output_path(flags.str("out"), "phases.csv");
    phase_table.write_csv(phase_csv);
    std::cout << "\nwrote " << phase_csv << "\n";
  }
  return 0;
}
