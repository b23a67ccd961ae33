// tram's CUDA kernels, run through the host emulation of cuda_emu.h, against
// the ATen reference (src/ops_reference.cpp) on the same inputs: per-row KL
// forward and backward (fp32/fp16/bf16, short and long rows, strided rows,
// masked rows holding NaN/inf), and every multi-tensor op (fp32/fp16/bf16/
// fp64, every scaling, odd sizes, misaligned and empty tensors). The kernels
// are called the way src/ops_cuda.cpp calls them, with host memory standing
// in for device memory.
//
//   check_kernels quick   # about 4 minutes on 2 cores
//   check_kernels full    # adds GPT-2-vocabulary rows, large logits, long lists
#include "multi_tensor_launches.h"  // src/: the planner src/ops_cuda.cpp uses

#include <tram/ops.h>

#include <torch/torch.h>

#include <iostream>
#include <limits>
#include <string>
#include <vector>

namespace emu {
extern int64_t launches;
}

namespace {

using namespace tram::cuda;
using torch::Tensor;
using tram::ops::Divergence;
using tram::ops::Reduction;
using tram::ops::Scaling;

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::cerr << "FAILED: " << what << "\n";
  }
}

ElementType element_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return ElementType::kFloat;
    case torch::kHalf: return ElementType::kHalf;
    case torch::kBFloat16: return ElementType::kBFloat16;
    default: return ElementType::kDouble;
  }
}

double ulp(torch::ScalarType t) {
  return t == torch::kDouble ? 2.3e-16 : t == torch::kFloat ? 1.2e-7 : t == torch::kHalf ? 9.8e-4 : 7.9e-3;
}

// Close within rtol of the largest finite |expected| (and element-wise).
void expect_close(const Tensor& actual, const Tensor& expected, double rtol, const std::string& what) {
  const Tensor a = actual.to(torch::kDouble);
  const Tensor e = expected.to(torch::kDouble);
  const Tensor finite = e.masked_select(torch::isfinite(e));
  const double scale = finite.numel() ? finite.abs().max().item<double>() : 0.0;
  if (!torch::isclose(a, e, rtol, rtol * scale, /*equal_nan=*/true).all().item<bool>()) {
    const int64_t worst = (a - e).abs().nan_to_num(1e300).flatten().argmax().item<int64_t>();
    std::cerr << what << ": worst at " << worst << ": " << a.flatten()[worst].item<double>()
              << " vs " << e.flatten()[worst].item<double>() << "\n";
    expect(false, what);
  }
}

void check_divergence(int64_t rows, int64_t classes, torch::ScalarType dtype, int64_t row_padding,
                      bool masked, double logit_scale = 2.0) {
  const std::string what = "KL " + std::to_string(rows) + "x" + std::to_string(classes) + " " +
                           c10::toString(dtype) + " padding " + std::to_string(row_padding) +
                           (masked ? " masked" : "");
  Tensor target_rows = (logit_scale * torch::randn({rows, classes + row_padding}, torch::kDouble)).to(dtype);
  Tensor current_rows =
      (target_rows.to(torch::kDouble) + torch::randn({rows, classes + row_padding}, torch::kDouble)).to(dtype);
  const Tensor mask = masked ? (torch::rand({rows}) > 0.3) : Tensor();
  if (masked) {
    target_rows.index_put_({~mask}, std::numeric_limits<double>::quiet_NaN());
    current_rows.index_put_({~mask}, std::numeric_limits<double>::infinity());
  }
  // Strided rows when padded: every row starts at a different alignment.
  const Tensor target = target_rows.slice(1, 0, classes);
  const Tensor current = current_rows.slice(1, 0, classes);
  DivergenceRows in;
  in.target = target.data_ptr();
  in.current = current.data_ptr();
  in.target_row_stride = target.stride(0);
  in.current_row_stride = current.stride(0);
  in.rows = rows;
  in.classes = classes;
  in.valid_rows = masked ? mask.data_ptr<bool>() : nullptr;

  // Poisoned outputs: an unwritten element shows as NaN.
  const Tensor forward_kl = torch::full({rows}, NAN);
  const Tensor reverse_kl = torch::full({rows}, NAN);
  const Tensor statistics = torch::full({kRowStatistics, rows}, NAN);
  const DivergenceForwardOutputs out{forward_kl.data_ptr<float>(), reverse_kl.data_ptr<float>(),
                                     statistics.data_ptr<float>()};
  expect(divergence_rows_forward(element_type(dtype), in, out, nullptr) == cudaSuccess, what);
  expect_close(forward_kl, tram::ops::trust_region_divergence(target, current, Divergence::kForward, Reduction::kNone, mask),
               2e-5, what + " forward KL");
  expect_close(reverse_kl, tram::ops::trust_region_divergence(target, current, Divergence::kReverse, Reduction::kNone, mask),
               2e-5, what + " reverse KL");

  const double grad_rtol = dtype == torch::kFloat ? 2e-5 : 1.01 * ulp(dtype);
  for (const auto divergence : {Divergence::kForward, Divergence::kReverse, Divergence::kSymmetric}) {
    for (const bool target_grad_needed : {true, false}) {
      const std::string case_name = what + " backward " + std::to_string(static_cast<int>(divergence)) +
                                    (target_grad_needed ? "" : " current only");
      const Tensor row_grads = torch::rand({rows}) + 0.5;
      const Tensor target_grad = torch::full({rows, classes}, NAN, torch::TensorOptions().dtype(dtype));
      const Tensor current_grad = torch::full({rows, classes}, NAN, torch::TensorOptions().dtype(dtype));
      DivergenceBackwardArgs args;
      args.forward_kl = divergence != Divergence::kReverse ? forward_kl.data_ptr<float>() : nullptr;
      args.reverse_kl = divergence != Divergence::kForward ? reverse_kl.data_ptr<float>() : nullptr;
      args.statistics = statistics.data_ptr<float>();
      args.row_grads = row_grads.data_ptr<float>();
      args.target_grad = target_grad_needed ? target_grad.data_ptr() : nullptr;
      args.current_grad = current_grad.data_ptr();
      expect(divergence_rows_backward(element_type(dtype), in, args, nullptr) == cudaSuccess, case_name);
      const Tensor target_leaf = target.detach().clone().requires_grad_();
      const Tensor current_leaf = current.detach().clone().requires_grad_();
      (tram::ops::trust_region_divergence(target_leaf, current_leaf, divergence, Reduction::kNone, mask) * row_grads)
          .sum()
          .backward();
      if (target_grad_needed) expect_close(target_grad, target_leaf.grad(), grad_rtol, case_name + " target");
      expect_close(current_grad, current_leaf.grad(), grad_rtol, case_name + " current");
    }
  }
}

// Calls kernel(plan) for every launch src/ops_cuda.cpp makes of these lists,
// with the same planner (lists of more than kMaxLaunchTensors tensors take
// several launches).
template <typename Kernel>
void run_launches(std::initializer_list<torch::TensorList> lists, const tram::ops::AscentSpec* spec,
                  Kernel kernel, const std::string& what) {
  const auto dtype = [](const Tensor& t) { return static_cast<int>(t.scalar_type()); };
  const cudaError_t error = tram::ops::cuda_impl::for_each_launch(
      lists, spec, dtype, [&](int, const TensorListLaunch& plan) { return kernel(plan); });
  expect(error == cudaSuccess, what + ": launch error");
}

// Contiguous, but one element into its storage: no 16-byte accesses.
Tensor misaligned(const Tensor& values) {
  const Tensor storage = torch::empty({values.numel() + 1}, values.options());
  Tensor view = storage.slice(0, 1).view(values.sizes());
  view.copy_(values);
  return view;
}

std::vector<Tensor> clones(const std::vector<Tensor>& tensors) {
  std::vector<Tensor> out;
  for (const auto& t : tensors) out.push_back(t.clone());
  return out;
}

std::vector<Tensor> poisoned_like(const std::vector<Tensor>& tensors) {
  std::vector<Tensor> out;
  for (const auto& t : tensors) out.push_back(torch::full_like(t, NAN));
  return out;
}

void check_multi_tensor(torch::ScalarType dtype, Scaling scaling, const std::vector<std::vector<int64_t>>& shapes) {
  const std::string what = std::string("multi-tensor ") + c10::toString(dtype) + " scaling " +
                           std::to_string(static_cast<int>(scaling)) + ", " + std::to_string(shapes.size()) + " tensors";
  std::vector<Tensor> w, g, w_reference, g_reference;
  tram::ops::AscentSpec spec;
  spec.scaling = scaling;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Tensor a = torch::randn(shapes[i], torch::kDouble).to(dtype);
    const Tensor b = torch::randn(shapes[i], torch::kDouble).to(dtype);
    w.push_back(i % 3 == 1 ? misaligned(a) : a.clone());
    g.push_back(i % 4 == 2 ? misaligned(b) : b.clone());
    w_reference.push_back(a.clone());
    g_reference.push_back(b.clone());
    spec.eta.push_back(0.01 * static_cast<double>(i % 7));
    spec.coef.push_back((i % 2 ? -0.3 : 0.05) * static_cast<double>(1 + i % 5));
  }
  {
    int64_t total_chunks = 0;
    for (const Tensor& t : w) total_chunks += chunks_of(t.numel());
    std::vector<double> partials(std::max<int64_t>(total_chunks, 1), NAN);
    int64_t offset = 0;
    run_launches({w, g}, &spec, [&](const TensorListLaunch& plan) {
      const cudaError_t error = squared_norm_partials(element_type(dtype), static_cast<AscentScaling>(scaling),
                                                      plan, partials.data() + offset, nullptr);
      offset += plan.num_chunks;
      return error;
    }, what);
    expect(offset == total_chunks, what + ": launches cover every chunk");
    const bool fp64 = dtype == torch::kDouble;
    const Tensor norm = torch::full({}, NAN, fp64 ? torch::kDouble : torch::kFloat);
    expect(sum_partials(partials.data(), offset, fp64 ? ElementType::kDouble : ElementType::kFloat,
                        norm.data_ptr(), nullptr) == cudaSuccess, what);
    expect_close(norm, tram::ops::squared_norm(w_reference, g_reference, spec), fp64 ? 1e-12 : 2e-5,
                 what + " squared norm");
  }
  {
    const std::vector<Tensor> params = clones(w), backups = poisoned_like(w);
    const std::vector<Tensor> params_reference = clones(w_reference), backups_reference = poisoned_like(w_reference);
    run_launches({params, g, backups}, &spec, [&](const TensorListLaunch& plan) {
      return ascend_with_backup(element_type(dtype), static_cast<AscentScaling>(scaling), plan, nullptr);
    }, what);
    tram::ops::ascend_with_backup(params_reference, g_reference, backups_reference, spec);
    for (size_t i = 0; i < w.size(); ++i) {
      expect(torch::equal(backups[i], w_reference[i]), what + " backup " + std::to_string(i));
      // The same roundings as the reference, in the same order: bit-exact.
      expect(torch::equal(params[i], params_reference[i]), what + " ascend_with_backup " + std::to_string(i));
    }
  }
  {
    const std::vector<Tensor> out = poisoned_like(w), out_reference = poisoned_like(w);
    run_launches({out, w, g}, &spec, [&](const TensorListLaunch& plan) {
      return ascend_from(element_type(dtype), static_cast<AscentScaling>(scaling), plan, nullptr);
    }, what);
    tram::ops::ascend_from(out_reference, w_reference, g_reference, spec);
    for (size_t i = 0; i < w.size(); ++i) {
      expect(torch::equal(w[i], w_reference[i]), what + " ascend_from changed its source " + std::to_string(i));
      expect(torch::equal(out[i], out_reference[i]), what + " ascend_from " + std::to_string(i));
    }
  }
  {
    const std::vector<Tensor> a = clones(w), b = clones(g);
    const int element_size = static_cast<int>(w[0].element_size());
    run_launches({a, b}, nullptr, [&](const TensorListLaunch& plan) { return swap(element_size, plan, nullptr); },
                 what);
    for (size_t i = 0; i < w.size(); ++i) {
      expect(torch::equal(a[i], g_reference[i]) && torch::equal(b[i], w_reference[i]), what + " swap " + std::to_string(i));
    }
    run_launches({a, b}, nullptr, [&](const TensorListLaunch& plan) { return copy(element_size, plan, nullptr); },
                 what);
    for (size_t i = 0; i < w.size(); ++i) expect(torch::equal(a[i], w_reference[i]), what + " copy " + std::to_string(i));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "quick";
  torch::manual_seed(0);
  for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    for (const auto& [rows, classes] :
         std::vector<std::pair<int64_t, int64_t>>{{5, 3}, {9, 1}, {17, 33}, {3, 1024}, {2, 1025}, {2, 5003}}) {
      for (const int64_t padding : {int64_t{0}, int64_t{3}}) {
        for (const bool masked : {false, true}) check_divergence(rows, classes, dtype, padding, masked);
      }
    }
  }
  const std::vector<std::vector<int64_t>> shapes = {{1},    {},     {7},          {0},           {8},
                                                    {9},    {33, 31}, {8191},      {8192},        {8193},
                                                    {2, 0, 3}, {3 * 8192 + 5}, {4, 6, 5, 3}};
  for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16, torch::kDouble}) {
    for (const auto scaling : {Scaling::kIdentity, Scaling::kAdaptive, Scaling::kFisher, Scaling::kReleasedIdentity,
                               Scaling::kReleasedAdaptive}) {
      check_multi_tensor(dtype, scaling, shapes);
    }
  }
  // More tensors than one launch takes (kMaxLaunchTensors): three launches,
  // empty tensors among them.
  std::vector<std::vector<int64_t>> long_list;
  for (int i = 0; i < 2 * kMaxLaunchTensors + 5; ++i) long_list.push_back({i % 9 == 4 ? 0 : 1 + (i * 53) % 97});
  check_multi_tensor(torch::kFloat, Scaling::kAdaptive, long_list);
  if (mode == "full") {
    check_divergence(2, 50257, torch::kFloat, 0, false);
    check_divergence(3, 50257, torch::kBFloat16, 1, true);
    check_divergence(3, 4099, torch::kFloat, 0, false, /*logit_scale=*/5000.0);
    check_divergence(40, 1000, torch::kHalf, 5, true);
    std::vector<std::vector<int64_t>> many;
    for (int i = 0; i < 300; ++i) many.push_back({1 + (i * 37) % 300});
    check_multi_tensor(torch::kFloat, Scaling::kAdaptive, many);
    check_multi_tensor(torch::kBFloat16, Scaling::kFisher, {{100003}, {5}, {3, 8192}});
  }
  std::cout << emu::launches << " emulated launches, " << failures << " failures\n";
  return failures == 0 ? 0 : 1;
}
