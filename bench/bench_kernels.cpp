// tram-bench-kernels: the fused tram::ops against the measured copy
// bandwidth (the floor of a memory-bound kernel) and against the ATen
// composites a user would otherwise write.
//
//   trust-region KL   logits [16*1024, 50257] (GPT-2, 16 x 1024 tokens) and
//                     [32, 3] (NLI), fp32 and bf16: forward, forward+backward
//                     vs log_softmax x2 + explicit KL / F.kl_div + sum
//   multi-tensor      parameters of GPT-2 small (124M) and ViT-B/16 (86M):
//                     each op, and the parameter traffic of one SAM / ASAM /
//                     TRAM-θt-1 step vs a per-tensor loop and _foreach ops
//
// Every kernel is first checked against its composite (the program exits
// non-zero on a mismatch), then timed: warm-up, then the median of --iters
// calls, with CUDA events on a GPU. "GB/s" is the minimum traffic (each
// input read once, each output written once) over the time, for the
// composites too, so the columns compare like with like.
#include "bench_common.h"

#include <tram/ops.h>

#ifdef TRAM_WITH_CUDA
#include "ops_cuda.h"
#endif

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

namespace {

using torch::Tensor;
using tram::ops::AscentSpec;
using tram::ops::Divergence;
using tram::ops::Reduction;
using tram::ops::Scaling;
using namespace tram::bench;

struct Context {
  torch::Device device = torch::kCPU;
  int warmup = 3;
  int iters = 20;
  double floor_gbs = 0.0;
  bool failed = false;
  Table table{{"section", "op", "shape", "dtype", "tram_ms", "bytes", "GB/s", "pct_of_copy",
               "baseline", "baseline_ms", "speedup", "check"}};

  double time(const std::function<void()>& fn) const { return median_ms(device, warmup, iters, fn); }

  void add(const std::string& section, const std::string& op, const std::string& shape,
           const std::string& dtype, double ms, double bytes, const std::string& baseline,
           double baseline_ms, const std::string& check) {
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    const bool has_baseline = baseline_ms > 0.0;
    table.add({section, op, shape, dtype, fixed(ms, 4), fixed(bytes, 0), fixed(gbs, 1),
               fixed(100.0 * gbs / floor_gbs, 1), baseline, fixed_or_blank(baseline_ms, 4, has_baseline),
               fixed_or_blank(baseline_ms / ms, 2, has_baseline), check});
  }

  // Records a check; a failed one makes the program exit non-zero.
  std::string check(bool ok, const std::string& what, double error) {
    if (!ok) {
      failed = true;
      std::cerr << "CHECK FAILED: " << what << " (error " << error << ")\n";
    }
    return ok ? "ok" : "FAILED";
  }
};

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}

double max_relative_error(const Tensor& actual, const Tensor& expected) {
  const Tensor a = actual.detach().to(torch::kDouble);
  const Tensor e = expected.detach().to(torch::kDouble);
  const double scale = std::max(e.abs().max().item<double>(), 1e-30);
  return (a - e).abs().max().item<double>() / scale;
}

// ===========================================================================
// Trust-region KL
// ===========================================================================

// What a user writes in ATen: two log-softmaxes in fp32, then the KL.
Tensor composite_kl_explicit(const Tensor& target, const Tensor& current) {
  const Tensor log_t = torch::log_softmax(target, -1, torch::kFloat);
  const Tensor log_c = torch::log_softmax(current, -1, torch::kFloat);
  return (log_t.exp() * (log_t - log_c)).sum(-1).mean();
}

Tensor composite_kl_div(const Tensor& target, const Tensor& current) {
  const Tensor log_t = torch::log_softmax(target, -1, torch::kFloat);
  const Tensor log_c = torch::log_softmax(current, -1, torch::kFloat);
  return torch::kl_div(log_c, log_t, at::Reduction::Sum, /*log_target=*/true) /
         static_cast<double>(target.size(0));
}

void bench_divergence(Context& ctx, int64_t rows, int64_t classes, torch::ScalarType dtype) {
  const std::string shape = shape_string({rows, classes});
  const std::string type = dtype_name(dtype);
  std::cout << "KL " << shape << " " << type << "\n" << std::flush;
  const auto options = torch::TensorOptions().device(ctx.device);
  const Tensor target = (2.0 * torch::randn({rows, classes}, options)).to(dtype);
  const Tensor current = (target.to(torch::kFloat) + torch::randn({rows, classes}, options)).to(dtype);
  const double logits_bytes = static_cast<double>(target.numel()) * target.element_size();

  // Correctness: value and the gradient of the current logits.
  std::string value_check, grad_check;
  {
    const Tensor leaf = current.detach().requires_grad_();
    const Tensor d = tram::ops::trust_region_divergence(target, leaf);
    const Tensor grad = torch::autograd::grad({d}, {leaf})[0];
    const Tensor leaf_ref = current.detach().requires_grad_();
    const Tensor d_ref = composite_kl_explicit(target, leaf_ref);
    const Tensor grad_ref = torch::autograd::grad({d_ref}, {leaf_ref})[0];
    const double value_error = max_relative_error(d, d_ref);
    const double grad_error = max_relative_error(grad, grad_ref);
    const double grad_tolerance = dtype == torch::kFloat ? 1e-4 : 2e-2;
    value_check = ctx.check(value_error < 1e-4, "KL value " + shape + " " + type, value_error);
    grad_check = ctx.check(grad_error < grad_tolerance, "KL gradient " + shape + " " + type, grad_error);
  }

  {
    torch::NoGradGuard no_grad;
    const double explicit_ms = ctx.time([&] { composite_kl_explicit(target, current); });
    const double kl_div_ms = ctx.time([&] { composite_kl_div(target, current); });
    const double tram_ms = ctx.time([&] { tram::ops::trust_region_divergence(target, current); });
    const bool explicit_faster = explicit_ms <= kl_div_ms;
    ctx.add("kl", "forward (op, mean)", shape, type, tram_ms, 2 * logits_bytes,
            explicit_faster ? "log_softmax x2 + explicit KL" : "log_softmax x2 + kl_div",
            std::min(explicit_ms, kl_div_ms), value_check);
    const double reference_ms = ctx.time([&] { tram::ops::reference::trust_region_divergence(target, current); });
    ctx.add("kl", "forward (op, mean)", shape, type, tram_ms, 2 * logits_bytes, "tram::ops::reference",
            reference_ms, value_check);
#ifdef TRAM_WITH_CUDA
    if (ctx.device.is_cuda()) {
      const double kernel_ms = ctx.time([&] {
        tram::ops::cuda_impl::divergence_rows_forward(target, current, Tensor(), true, false);
      });
      ctx.add("kl", "forward (kernel only, per row)", shape, type, kernel_ms, 2 * logits_bytes, "", 0.0,
              value_check);
    }
#endif
  }

  // Forward + backward with the gradient of the current logits only (TRPO,
  // MESA: the target comes from a no-grad pass): read both twice, write one.
  {
    const Tensor leaf = current.detach().requires_grad_();
    const double tram_ms = ctx.time([&] {
      torch::autograd::grad({tram::ops::trust_region_divergence(target, leaf)}, {leaf});
    });
    const double composite_ms = ctx.time([&] {
      torch::autograd::grad({composite_kl_explicit(target, leaf)}, {leaf});
    });
    ctx.add("kl", "forward+backward (grad of current)", shape, type, tram_ms, 5 * logits_bytes,
            "log_softmax x2 + explicit KL, autograd", composite_ms, grad_check);
  }
  release_cached_memory(ctx.device);
}

// ===========================================================================
// Multi-tensor ascent
// ===========================================================================

using Shapes = std::vector<std::vector<int64_t>>;

// GPT-2 small as in Hugging Face's checkpoint (Conv1D weights are [in, out];
// the LM head is tied to wte): 148 tensors, 124,439,808 parameters.
Shapes gpt2_shapes(int64_t vocab, int64_t positions, int64_t hidden, int64_t layers) {
  Shapes s = {{vocab, hidden}, {positions, hidden}};
  for (int64_t l = 0; l < layers; ++l) {
    const Shapes block = {{hidden},         {hidden},    {hidden, 3 * hidden}, {3 * hidden},
                          {hidden, hidden}, {hidden},    {hidden},             {hidden},
                          {hidden, 4 * hidden}, {4 * hidden}, {4 * hidden, hidden}, {hidden}};
    s.insert(s.end(), block.begin(), block.end());
  }
  s.push_back({hidden});
  s.push_back({hidden});
  return s;
}

// ViT-B/16 at 224x224 with a 1000-class head (timm's vit_base_patch16_224):
// 152 tensors, 86,567,656 parameters.
Shapes vit_shapes(int64_t hidden, int64_t layers, int64_t patch, int64_t tokens, int64_t classes) {
  Shapes s = {{1, 1, hidden}, {1, tokens, hidden}, {hidden, 3, patch, patch}, {hidden}};
  for (int64_t l = 0; l < layers; ++l) {
    const Shapes block = {{hidden},         {hidden},    {3 * hidden, hidden}, {3 * hidden},
                          {hidden, hidden}, {hidden},    {hidden},             {hidden},
                          {4 * hidden, hidden}, {4 * hidden}, {hidden, 4 * hidden}, {hidden}};
    s.insert(s.end(), block.begin(), block.end());
  }
  s.insert(s.end(), {{hidden}, {hidden}, {classes, hidden}, {classes}});
  return s;
}

std::vector<Tensor> make_tensors(const Shapes& shapes, const torch::TensorOptions& options) {
  std::vector<Tensor> out;
  for (const auto& shape : shapes) out.push_back(torch::randn(shape, options));
  return out;
}

std::vector<Tensor> empty_like_all(const std::vector<Tensor>& tensors) {
  std::vector<Tensor> out;
  for (const auto& t : tensors) out.push_back(torch::empty_like(t));
  return out;
}

// --- what users write instead: a loop over tensors, or _foreach ops -------

double loop_sam_ascent(const std::vector<Tensor>& w, const std::vector<Tensor>& g,
                       const std::vector<Tensor>& backup, double rho) {
  std::vector<Tensor> norms;
  for (const auto& t : g) norms.push_back(t.norm(2));
  const double norm = torch::stack(norms).norm(2).item<double>();
  for (size_t i = 0; i < w.size(); ++i) {
    backup[i].copy_(w[i]);
    w[i].add_(g[i], rho / (norm + 1e-12));
  }
  return norm;
}

double foreach_sam_ascent(const std::vector<Tensor>& w, const std::vector<Tensor>& g,
                          const std::vector<Tensor>& backup, double rho) {
  const double norm = torch::stack(torch::_foreach_norm(g, 2)).norm(2).item<double>();
  torch::_foreach_copy_(backup, w);
  torch::_foreach_add_(w, g, rho / (norm + 1e-12));
  return norm;
}

double loop_asam_ascent(const std::vector<Tensor>& w, const std::vector<Tensor>& g,
                        const std::vector<Tensor>& backup, double rho, double eta) {
  std::vector<Tensor> norms;
  for (size_t i = 0; i < w.size(); ++i) norms.push_back((w[i].abs().add_(eta) * g[i]).norm(2));
  const double norm = torch::stack(norms).norm(2).item<double>();
  for (size_t i = 0; i < w.size(); ++i) {
    backup[i].copy_(w[i]);
    const Tensor t = w[i].abs().add_(eta);
    w[i].add_(t.mul_(t).mul_(g[i]), rho / (norm + 1e-12));
  }
  return norm;
}

double foreach_asam_ascent(const std::vector<Tensor>& w, const std::vector<Tensor>& g,
                           const std::vector<Tensor>& backup, double rho, double eta) {
  std::vector<Tensor> t = torch::_foreach_abs(w);
  torch::_foreach_add_(t, eta);
  const double norm =
      torch::stack(torch::_foreach_norm(torch::_foreach_mul(t, g), 2)).norm(2).item<double>();
  torch::_foreach_copy_(backup, w);
  torch::_foreach_mul_(t, t);
  torch::_foreach_mul_(t, g);
  torch::_foreach_add_(w, t, rho / (norm + 1e-12));
  return norm;
}

void loop_restore(const std::vector<Tensor>& w, const std::vector<Tensor>& backup) {
  for (size_t i = 0; i < w.size(); ++i) w[i].copy_(backup[i]);
}

void loop_swap(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    const Tensor tmp = a[i].clone();
    a[i].copy_(b[i]);
    b[i].copy_(tmp);
  }
}

// --- tram --------------------------------------------------------------------

AscentSpec spec_for(Scaling scaling, size_t tensors, double eta) {
  AscentSpec spec;
  spec.scaling = scaling;
  if (scaling != Scaling::kIdentity) spec.eta.assign(tensors, eta);
  return spec;
}

// The engine's ascent (src/optimizer.cpp): norm, read on the host, ascent.
double tram_ascent(const std::vector<Tensor>& w, const std::vector<Tensor>& g,
                   const std::vector<Tensor>& backup, Scaling scaling, double rho, double eta) {
  AscentSpec spec = spec_for(scaling, w.size(), eta);
  const double norm = std::sqrt(tram::ops::squared_norm(w, g, spec).item<double>());
  spec.coef.assign(w.size(), rho / (norm + 1e-12));
  tram::ops::ascend_with_backup(w, g, backup, spec);
  return norm;
}

void bench_ascent(Context& ctx, const std::string& model, const Shapes& shapes,
                  torch::ScalarType dtype) {
  const std::string type = dtype_name(dtype);
  const auto options = torch::TensorOptions().device(ctx.device).dtype(dtype);
  const std::vector<Tensor> w = make_tensors(shapes, options);
  const std::vector<Tensor> g = make_tensors(shapes, options);
  const std::vector<Tensor> backup = empty_like_all(w);
  const std::vector<Tensor> other = make_tensors(shapes, options);
  int64_t numel = 0;
  for (const auto& t : w) numel += t.numel();
  const double n = static_cast<double>(numel) * static_cast<double>(w[0].element_size());
  const std::string shape = model + " (" + std::to_string(w.size()) + " tensors, " +
                            std::to_string(numel) + " params)";
  std::cout << "ascent " << shape << " " << type << "\n" << std::flush;
  const double rho = 0.05;
  const double eta = 0.01;

  // Correctness: tram's ascent + restore against the _foreach composite.
  std::string check;
  {
    const std::vector<Tensor> w_ref = torch::_foreach_add(w, 0.0);  // copies
    const std::vector<Tensor> backup_ref = empty_like_all(w);
    const std::vector<Tensor> original = torch::_foreach_add(w, 0.0);
    const double norm = tram_ascent(w, g, backup, Scaling::kAdaptive, 0.5, eta);
    foreach_asam_ascent(w_ref, g, backup_ref, 0.5, eta);
    // The norm against fp64 (the composite's fp32 sum over millions of
    // terms is off by more than the kernels' own accumulation).
    std::vector<Tensor> terms;
    for (size_t i = 0; i < w.size(); ++i) {
      terms.push_back(((original[i].to(torch::kDouble).abs() + eta) * g[i].to(torch::kDouble)).square().sum());
    }
    const double norm_ref = std::sqrt(torch::stack(terms).sum().item<double>());
    double error = std::abs(norm - norm_ref) / norm_ref;
    for (size_t i = 0; i < w.size(); ++i) error = std::max(error, max_relative_error(w[i], w_ref[i]));
    tram::ops::copy(w, backup);
    bool exact = true;
    for (size_t i = 0; i < w.size(); ++i) exact = exact && torch::equal(w[i], original[i]);
    const double tolerance = dtype == torch::kFloat ? 1e-5 : 2e-2;
    check = ctx.check(error < tolerance && exact, "ascent " + shape + " " + type,
                      exact ? error : -1.0);
  }

  const AscentSpec identity = spec_for(Scaling::kIdentity, w.size(), eta);
  const AscentSpec adaptive = [&] {
    AscentSpec s = spec_for(Scaling::kAdaptive, w.size(), eta);
    s.coef.assign(w.size(), 1e-3);
    return s;
  }();
  // Every timed ascent is undone before the next call (restore included in
  // the composite rows below; for the single ops the drift of 1e-3 per call
  // on random data does not change the timing).
  const double norm_id_ms = ctx.time([&] { tram::ops::squared_norm(w, g, identity).item<double>(); });
  const double norm_id_loop = ctx.time([&] {
    std::vector<Tensor> norms;
    for (const auto& t : g) norms.push_back(t.norm(2));
    torch::stack(norms).norm(2).item<double>();
  });
  ctx.add("ascent", "squared_norm identity (+item)", shape, type, norm_id_ms, n,
          "per-tensor norm loop", norm_id_loop, check);
  // Each op against its ATen reference (tram::ops::reference, the _foreach
  // composite it is tested against): on the CPU this compares the fused
  // loops of src/ops_cpu.cpp with what they replace.
  const char* reference = "tram::ops::reference";
  const double norm_ad_ms = ctx.time([&] { tram::ops::squared_norm(w, g, adaptive).item<double>(); });
  const double norm_ad_ref =
      ctx.time([&] { tram::ops::reference::squared_norm(w, g, adaptive).item<double>(); });
  ctx.add("ascent", "squared_norm adaptive (+item)", shape, type, norm_ad_ms, 2 * n, reference, norm_ad_ref,
          check);
  const double ascend_ms = ctx.time([&] { tram::ops::ascend_with_backup(w, g, backup, adaptive); });
  const double ascend_ref = ctx.time([&] { tram::ops::reference::ascend_with_backup(w, g, backup, adaptive); });
  ctx.add("ascent", "ascend_with_backup adaptive", shape, type, ascend_ms, 4 * n, reference, ascend_ref, check);
  const double from_ms = ctx.time([&] { tram::ops::ascend_from(w, backup, g, adaptive); });
  const double from_ref = ctx.time([&] { tram::ops::reference::ascend_from(w, backup, g, adaptive); });
  ctx.add("ascent", "ascend_from adaptive", shape, type, from_ms, 3 * n, reference, from_ref, check);
  const double distance_ms = ctx.time([&] { tram::ops::squared_distance(w, backup).item<double>(); });
  const double distance_ref = ctx.time([&] { tram::ops::reference::squared_distance(w, backup).item<double>(); });
  ctx.add("ascent", "squared_distance (+item)", shape, type, distance_ms, 2 * n, reference, distance_ref, check);
  const double copy_ms = ctx.time([&] { tram::ops::copy(w, backup); });
  const double copy_loop = ctx.time([&] { loop_restore(w, backup); });
  ctx.add("ascent", "copy (restore)", shape, type, copy_ms, 2 * n, "per-tensor copy_ loop", copy_loop,
          check);
  const double swap_ms = ctx.time([&] { tram::ops::swap(w, other); });
  const double swap_loop = ctx.time([&] { loop_swap(w, other); });
  const double swap_ref = ctx.time([&] { tram::ops::reference::swap(w, other); });
  ctx.add("ascent", "swap", shape, type, swap_ms, 4 * n, "per-tensor clone+copy_ loop", swap_loop,
          check);
  ctx.add("ascent", "swap", shape, type, swap_ms, 4 * n, reference, swap_ref, check);

  // The parameter traffic of one step of each method (docs/ALGORITHMS.md §1-4), restore
  // included. SAM: norm(g) 1, ascent 4, restore 2.
  const double sam_ms = ctx.time([&] {
    tram_ascent(w, g, backup, Scaling::kIdentity, rho, eta);
    tram::ops::copy(w, backup);
  });
  const double sam_loop = ctx.time([&] {
    loop_sam_ascent(w, g, backup, rho);
    loop_restore(w, backup);
  });
  const double sam_foreach = ctx.time([&] {
    foreach_sam_ascent(w, g, backup, rho);
    torch::_foreach_copy_(w, backup);
  });
  ctx.add("step", "SAM ascent+restore", shape, type, sam_ms, 7 * n, "per-tensor loop", sam_loop, check);
  ctx.add("step", "SAM ascent+restore", shape, type, sam_ms, 7 * n, "_foreach ops", sam_foreach, check);
  // ASAM (and TRAM-θ0/ε): norm(|w|, g) 2, ascent 4, restore 2.
  const double asam_ms = ctx.time([&] {
    tram_ascent(w, g, backup, Scaling::kAdaptive, rho, eta);
    tram::ops::copy(w, backup);
  });
  const double asam_loop = ctx.time([&] {
    loop_asam_ascent(w, g, backup, rho, eta);
    loop_restore(w, backup);
  });
  const double asam_foreach = ctx.time([&] {
    foreach_asam_ascent(w, g, backup, rho, eta);
    torch::_foreach_copy_(w, backup);
  });
  ctx.add("step", "ASAM ascent+restore", shape, type, asam_ms, 8 * n, "per-tensor loop", asam_loop,
          check);
  ctx.add("step", "ASAM ascent+restore", shape, type, asam_ms, 8 * n, "_foreach ops", asam_foreach,
          check);
  // TRAM-θt-1 (src/optimizer.cpp): swap in θt-1 4, copy θt back 2, norm 2,
  // ascend_from θt 3, restore 2.
  const double tram_prev_ms = ctx.time([&] {
    tram::ops::swap(w, other);
    tram::ops::copy(w, other);
    AscentSpec spec = spec_for(Scaling::kAdaptive, w.size(), eta);
    const double norm = std::sqrt(tram::ops::squared_norm(w, g, spec).item<double>());
    spec.coef.assign(w.size(), rho / (norm + 1e-12));
    tram::ops::ascend_from(w, other, g, spec);
    tram::ops::copy(w, other);
  });
  const double tram_prev_loop = ctx.time([&] {
    loop_swap(w, other);
    loop_restore(w, other);
    std::vector<Tensor> norms;
    for (size_t i = 0; i < w.size(); ++i) norms.push_back((w[i].abs().add_(eta) * g[i]).norm(2));
    const double norm = torch::stack(norms).norm(2).item<double>();
    for (size_t i = 0; i < w.size(); ++i) {
      const Tensor t = other[i].abs().add_(eta);
      w[i].copy_(other[i]).add_(t.mul_(t).mul_(g[i]), rho / (norm + 1e-12));
    }
    loop_restore(w, other);
  });
  ctx.add("step", "TRAM-prev swap+ascent+restore", shape, type, tram_prev_ms, 13 * n,
          "per-tensor loop", tram_prev_loop, check);
  release_cached_memory(ctx.device);
}

}  // namespace

int main(int argc, char** argv) {
  const Flags flags(argc, argv,
                    {{"device", "cuda"},
                     {"out", "bench/out"},
                     {"iters", "20"},
                     {"warmup", "3"},
                     {"dtypes", "fp32,bf16"},
                     {"small", "0"},
                     {"models", "gpt2-small,vit-b16"},
                     {"kl-shapes", "16384x50257,32x3"},
                     {"sections", "kl,ascent"},
                     {"copy-bytes", "2147483648"}},
                    "tram-bench-kernels: fused tram::ops vs copy bandwidth and ATen composites.\n"
                    "--small uses tiny shapes (for a CPU smoke run). --models: the ascent section's\n"
                    "parameter shapes, from gpt2-small, vit-b16, gpt2-cpu (the CPU step benchmark's\n"
                    "5.5M-parameter GPT-2: 4 layers, hidden 256, vocabulary 8000). --kl-shapes: the\n"
                    "divergence's logits, ROWSxCLASSES,... (the CPU step benchmark's: 512x8000).");
  Context ctx;
  ctx.device = parse_device(flags.str("device"));
  ctx.warmup = static_cast<int>(flags.integer("warmup"));
  ctx.iters = static_cast<int>(flags.integer("iters"));
  const bool small = flags.flag("small");
  torch::manual_seed(0);

  const int64_t copy_bytes = small ? (int64_t{64} << 20) : flags.integer("copy-bytes");
  ctx.floor_gbs = copy_bandwidth_gbs(ctx.device, copy_bytes, ctx.warmup, ctx.iters);
  std::cout << "device " << ctx.device << ": copy bandwidth " << fixed(ctx.floor_gbs, 1)
            << " GB/s (read + write, " << copy_bytes << " bytes)\n";
  ctx.table.add({"floor", "device-to-device copy", std::to_string(copy_bytes), "", "",
                 std::to_string(2 * copy_bytes), fixed(ctx.floor_gbs, 1), "100.0", "", "", "", ""});

  std::vector<torch::ScalarType> dtypes;
  for (const auto& name : flags.list("dtypes")) dtypes.push_back(parse_dtype(name));
  const auto sections = flags.list("sections");
  const auto wants = [&](const std::string& s) {
    return std::find(sections.begin(), sections.end(), s) != sections.end();
  };

  if (wants("kl")) {
    std::vector<std::pair<int64_t, int64_t>> shapes = {{64, 5003}, {32, 3}};
    if (!small) {
      shapes.clear();
      for (const auto& rows_x_classes : flags.list("kl-shapes")) {
        const auto x = rows_x_classes.find('x');
        if (x == std::string::npos) throw std::invalid_argument("--kl-shapes: ROWSxCLASSES, got " + rows_x_classes);
        shapes.emplace_back(std::stoll(rows_x_classes.substr(0, x)), std::stoll(rows_x_classes.substr(x + 1)));
      }
    }
    for (const auto dtype : dtypes) {
      for (const auto& [rows, classes] : shapes) bench_divergence(ctx, rows, classes, dtype);
    }
  }
  if (wants("ascent")) {
    std::vector<std::pair<std::string, Shapes>> models;
    if (small) {
      models = {{"gpt2-tiny", gpt2_shapes(1000, 64, 64, 2)}, {"vit-tiny", vit_shapes(64, 2, 4, 17, 10)}};
    } else {
      for (const auto& name : flags.list("models")) {
        if (name == "gpt2-small") {
          models.emplace_back(name, gpt2_shapes(50257, 1024, 768, 12));
        } else if (name == "vit-b16") {
          models.emplace_back(name, vit_shapes(768, 12, 16, 197, 1000));
        } else if (name == "gpt2-cpu") {
          models.emplace_back(name, gpt2_shapes(8000, 1024, 256, 4));
        } else {
          throw std::invalid_argument("--models: unknown model " + name + " (gpt2-small, vit-b16, gpt2-cpu)");
        }
      }
    }
    for (const auto dtype : dtypes) {
      for (const auto& [model, shapes] : models) bench_ascent(ctx, model, shapes, dtype);
    }
  }

  std::cout << "\n";
  ctx.table.print(std::cout);
  const std::string csv = output_path(flags.str("out"), "kernels.csv");
  ctx.table.write_csv(csv);
  std::cout << "\nwrote " << csv << "\n";
  if (ctx.failed) {
    std::cerr << "some kernel checks FAILED (see above)\n";
    return 1;
  }
  return 0;
}
