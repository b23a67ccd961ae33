// The engine and the SAM-style methods against docs/ALGORITHMS.md §1-2.
//
// Closed-form checks: a small linear softmax classifier in float64; the test
// computes the gradient with autograd on a functional copy of the model and
// the expected perturbation and step from the documented formulas with plain tensor
// ops, then compares with what the optimizer did.
#include <tram/tram.h>

#include "test_util.h"

namespace {

using tram::test::Problem;

constexpr double kTol = 1e-10;

// One SGD step (no momentum) of the SAM family in closed form.
std::vector<torch::Tensor> expected_sgd_step(const Problem& p, const std::vector<torch::Tensor>& w, double lr,
                                             const std::function<std::vector<torch::Tensor>(
                                                 const std::vector<torch::Tensor>& w,
                                                 const std::vector<torch::Tensor>& g)>& perturbation) {
  auto g = p.grad(w);
  auto e = perturbation(w, g);
  std::vector<torch::Tensor> shifted;
  for (size_t i = 0; i < w.size(); ++i) shifted.push_back(w[i] + e[i]);
  auto g2 = p.grad(shifted);
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < w.size(); ++i) out.push_back(w[i] - lr * g2[i]);
  return out;
}

double global_norm(const std::vector<torch::Tensor>& ts) {
  double sum = 0;
  for (const auto& t : ts) sum += t.pow(2).sum().item<double>();
  return std::sqrt(sum);
}

std::vector<torch::Tensor> sam_e(const std::vector<torch::Tensor>& g, const std::vector<double>& rho) {
  const double norm = global_norm(g);
  std::vector<torch::Tensor> e;
  for (size_t i = 0; i < g.size(); ++i) e.push_back(rho[i] * g[i] / (norm + 1e-12));
  return e;
}

std::vector<torch::Tensor> asam_e(const std::vector<torch::Tensor>& w, const std::vector<torch::Tensor>& g, double rho,
                                  double eta) {
  std::vector<torch::Tensor> tg;
  for (size_t i = 0; i < g.size(); ++i) tg.push_back((w[i].abs() + eta) * g[i]);
  const double norm = global_norm(tg);
  std::vector<torch::Tensor> e;
  for (size_t i = 0; i < g.size(); ++i) e.push_back(rho * (w[i].abs() + eta).pow(2) * g[i] / (norm + 1e-12));
  return e;
}

std::vector<torch::Tensor> fsam_e(const std::vector<torch::Tensor>& g, double gamma, double eta_f) {
  double sum = 0;
  for (const auto& gi : g) sum += (gi.pow(2) / (1 + eta_f * gi.pow(2))).sum().item<double>();
  std::vector<torch::Tensor> e;
  for (const auto& gi : g) e.push_back(gamma * (gi / (1 + eta_f * gi.pow(2))) / std::sqrt(sum + 1e-12));
  return e;
}

void expect_close(const std::vector<torch::Tensor>& actual, const std::vector<torch::Tensor>& expected, double tol) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    const double diff = (actual[i] - expected[i]).abs().max().item<double>();
    EXPECT_LE(diff, tol) << "tensor " << i;
  }
}

TEST(ClosedForm, SamSgdStepMatchesSpec) {
  Problem p;
  auto w0 = p.values();
  auto expected = expected_sgd_step(p, w0, 0.1, [](auto&, auto& g) { return sam_e(g, {0.05, 0.05}); });
  auto base = std::make_shared<torch::optim::SGD>(p.params(), torch::optim::SGDOptions(0.1));
  tram::SAM opt(base, tram::SAMOptions().rho(0.05));
  opt.step(p.loss_closure(opt));
  expect_close(p.values(), expected, kTol);
  // The step really moved, and differs from a plain SGD step by the ascent.
  auto plain = expected_sgd_step(p, w0, 0.1, [](auto& w, auto&) {
    std::vector<torch::Tensor> zero;
    for (auto& t : w) zero.push_back(torch::zeros_like(t));
    return zero;
  });
  EXPECT_GT((p.values()[0] - plain[0]).abs().max().item<double>(), 1e-8);
}

TEST(ClosedForm, AsamWithAndWithoutEta) {
  for (double eta : {0.0, 0.01, 0.3}) {
    Problem p;
    auto expected = expected_sgd_step(p, p.values(), 0.1, [&](auto& w, auto& g) { return asam_e(w, g, 0.5, eta); });
    auto base = std::make_shared<torch::optim::SGD>(p.params(), torch::optim::SGDOptions(0.1));
    tram::ASAM opt(base, tram::ASAMOptions().rho(0.5).eta(eta));
    opt.step(p.loss_closure(opt));
    expect_close(p.values(), expected, kTol);
  }
}

TEST(ClosedForm, FsamMatchesSpec) {
  Problem p;
  auto expected = expected_sgd_step(p, p.values(), 0.1, [](auto&, auto& g) { return fsam_e(g, 0.1, 0.1); });
  auto base = std::make_shared<torch::optim::SGD>(p.params(), torch::optim::SGDOptions(0.1));
  tram::FSAM opt(base);
  opt.step(p.loss_closure(opt));
  expect_close(p.values(), expected, kTol);
}

TEST(ClosedForm, SamWithAdamBase) {
  Problem p;
  auto w = p.values();
  auto g = p.grad(w);
  auto e = sam_e(g, {0.05, 0.05});
  std::vector<torch::Tensor> shifted;
  for (size_t i = 0; i < w.size(); ++i) shifted.push_back(w[i] + e[i]);
  auto g2 = p.grad(shifted);
  // Adam's first step: m = (1-b1) g, v = (1-b2) g^2, bias-corrected to g and g^2.
  const double lr = 1e-2, eps = 1e-8;
  std::vector<torch::Tensor> expected;
  for (size_t i = 0; i < w.size(); ++i) expected.push_back(w[i] - lr * g2[i] / (g2[i].abs() + eps));
  auto base = std::make_shared<torch::optim::Adam>(p.params(), torch::optim::AdamOptions(lr).eps(eps));
  tram::SAM opt(base);
  opt.step(p.loss_closure(opt));
  expect_close(p.values(), expected, 1e-9);
}

TEST(ClosedForm, GroupsWithDifferentRhoShareTheGlobalNorm) {
  Problem p;
  auto expected = expected_sgd_step(p, p.values(), 0.1, [](auto&, auto& g) { return sam_e(g, {0.05, 0.2}); });
  std::vector<torch::optim::OptimizerParamGroup> groups{{{p.weight}}, {{p.bias}}};
  auto base = std::make_shared<torch::optim::SGD>(groups, torch::optim::SGDOptions(0.1));
  tram::SAM opt(base);
  opt.group_options(1).rho(0.2);
  opt.step(p.loss_closure(opt));
  expect_close(p.values(), expected, kTol);
  EXPECT_EQ(opt.last_step().radius, (std::vector<double>{0.05, 0.2}));
}

TEST(ClosedForm, RhoZeroIsThePlainBaseStepExactly) {
  Problem a, b;
  auto base_a = std::make_shared<torch::optim::SGD>(a.params(), torch::optim::SGDOptions(0.1).momentum(0.9));
  tram::SAM sam(base_a, tram::SAMOptions().rho(0.0));
  torch::optim::SGD plain(b.params(), torch::optim::SGDOptions(0.1).momentum(0.9));
  for (int step = 0; step < 5; ++step) {
    sam.step(a.loss_closure(sam));
    plain.step(b.loss_closure(plain));
  }
  for (size_t i = 0; i < a.params().size(); ++i) EXPECT_TRUE(torch::equal(a.params()[i], b.params()[i]));
}

TEST(ClosedForm, PlainFactoryBaseStepsExactlyLikeTheBase) {
  Problem a, b;
  auto wrapped = tram::make_optimizer("adam", a.params(), tram::parse_options("lr=0.01"));
  torch::optim::Adam plain(b.params(), torch::optim::AdamOptions(0.01));
  for (int step = 0; step < 4; ++step) {
    wrapped->step(a.forward_closure());
    plain.step(b.loss_closure(plain));
  }
  for (size_t i = 0; i < a.params().size(); ++i) EXPECT_TRUE(torch::equal(a.params()[i], b.params()[i]));
}

TEST(Closures, ForwardClosureEqualsLossClosureForSamFamily) {
  for (const std::string method : {"sam", "asam", "fsam"}) {
    Problem a, b;
    auto opt_a = tram::make_optimizer(method, a.params(), tram::parse_options("lr=0.1,momentum=0.5"));
    auto opt_b = tram::make_optimizer(method, b.params(), tram::parse_options("lr=0.1,momentum=0.5"));
    for (int step = 0; step < 3; ++step) {
      opt_a->step(a.loss_closure(*opt_a));
      opt_b->step(b.forward_closure());
    }
    for (size_t i = 0; i < a.params().size(); ++i) EXPECT_TRUE(torch::equal(a.params()[i], b.params()[i])) << method;
  }
}

TEST(Closures, TwoCallApiEqualsStep) {
  Problem a, b;
  auto opt_a = tram::make_optimizer("asam", a.params(), tram::parse_options("lr=0.1"));
  auto opt_b = tram::make_optimizer("asam", b.params(), tram::parse_options("lr=0.1"));
  for (int step = 0; step < 3; ++step) {
    opt_a->step(a.loss_closure(*opt_a));
    opt_b->zero_grad();
    b.loss().backward();
    opt_b->first_step();
    EXPECT_TRUE(opt_b->perturbed());
    opt_b->zero_grad();
    b.loss().backward();
    opt_b->second_step();
    EXPECT_FALSE(opt_b->perturbed());
  }
  for (size_t i = 0; i < a.params().size(); ++i) EXPECT_TRUE(torch::equal(a.params()[i], b.params()[i]));
}

TEST(Contracts, ThrowingSecondPassRestoresExactly) {
  Problem p;
  auto before = p.values();
  auto opt = tram::make_optimizer("sam", p.params(), tram::parse_options("lr=0.1,rho=0.5"));
  int calls = 0;
  auto closure = [&] {
    opt->zero_grad();
    auto loss = p.loss();
    loss.backward();
    if (++calls == 2) throw std::runtime_error("boom in pass 2");
    return loss;
  };
  EXPECT_THROW(opt->step(closure), std::runtime_error);
  EXPECT_EQ(calls, 2);
  EXPECT_FALSE(opt->perturbed());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(p.params()[i], before[i]));

  // Same through the forward closure, throwing on the perturbed pass.
  auto forward = [&](const tram::Pass& pass) -> tram::PassOutput {
    if (pass.kind() == tram::PassKind::kPerturbed) throw std::runtime_error("boom in pass 2");
    return p.forward(pass);
  };
  EXPECT_THROW(opt->step(forward), std::runtime_error);
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(p.params()[i], before[i]));
  EXPECT_EQ(opt->step_count(), 0);
}

TEST(Contracts, ParametersWithoutGradientAreNeitherPerturbedNorStepped) {
  Problem p;
  auto frozen = torch::randn({3}, torch::kFloat64).requires_grad_(true);
  const auto frozen_before = frozen.detach().clone();
  auto params = p.params();
  params.push_back(frozen);  // in the optimizer, but the loss never uses it
  auto opt = tram::make_optimizer("asam", params, tram::parse_options("lr=0.1,momentum=0.9,eta=0.5"));
  bool checked = false;
  torch::Tensor weight_at_pass_1;
  auto forward = [&](const tram::Pass& pass) {
    if (pass.kind() == tram::PassKind::kClean) weight_at_pass_1 = p.weight.detach().clone();
    if (pass.kind() == tram::PassKind::kPerturbed) {
      EXPECT_TRUE(torch::equal(frozen, frozen_before));           // not perturbed during pass 2
      EXPECT_FALSE(torch::equal(p.weight, weight_at_pass_1));     // while the others are
      checked = true;
    }
    return p.forward(pass);
  };
  for (int i = 0; i < 3; ++i) opt->step(forward);
  EXPECT_TRUE(checked);
  EXPECT_FALSE(frozen.grad().defined());
  EXPECT_TRUE(torch::equal(frozen, frozen_before));
}

TEST(Contracts, NonFiniteAscentGradientSkipsTheAscentAndIsCounted) {
  Problem p;
  auto w0 = p.values();
  auto g = p.grad(w0);
  auto opt = tram::make_optimizer("sam", p.params(), tram::parse_options("lr=0.1"));
  int calls = 0;
  auto closure = [&] {
    opt->zero_grad();
    auto loss = p.loss();
    // Pass 1 overflows (as a loss-scaled fp16 pass would); pass 2 is finite.
    (++calls == 1 ? loss * std::numeric_limits<double>::infinity() : loss).backward();
    return loss;
  };
  opt->step(closure);
  EXPECT_EQ(opt->skipped_ascents(), 1);
  EXPECT_TRUE(opt->last_step().ascent_skipped);
  // A plain SGD step with the gradient at w.
  std::vector<torch::Tensor> expected{w0[0] - 0.1 * g[0], w0[1] - 0.1 * g[1]};
  expect_close(p.values(), expected, kTol);
}

TEST(Contracts, SparseAndComplexGradientsAreRejected) {
  torch::nn::Embedding embedding(torch::nn::EmbeddingOptions(10, 3).sparse(true));
  auto opt = tram::make_optimizer("sam", embedding->parameters(), tram::parse_options("lr=0.1"));
  auto closure = [&] {
    opt->zero_grad();
    auto loss = embedding(torch::tensor({1, 2})).sum();
    loss.backward();
    return loss;
  };
  try {
    opt->step(closure);
    FAIL() << "expected a sparse-gradient error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("sparse"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("SAM"), std::string::npos) << e.what();
  }
}

TEST(Contracts, BadOptionsAreRejectedWithTheOptimizersName) {
  Problem p;
  auto base = [&] { return std::make_shared<torch::optim::SGD>(p.params(), torch::optim::SGDOptions(0.1)); };
  auto message_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const c10::Error& e) {
      return e.what();
    }
    return "";
  };
  auto m = message_of([&] { tram::SAM(base(), tram::SAMOptions().rho(-1)); });
  EXPECT_NE(m.find("SAM: invalid rho: -1"), std::string::npos) << m;
  m = message_of([&] { tram::ASAM(base(), tram::ASAMOptions().eta(-0.5)); });
  EXPECT_NE(m.find("ASAM: invalid eta: -0.5"), std::string::npos) << m;
  m = message_of([&] { tram::FSAM(base(), tram::FSAMOptions().eps_norm(0)); });
  EXPECT_NE(m.find("FSAM: invalid eps_norm: 0"), std::string::npos) << m;
  m = message_of([&] { tram::SAM(nullptr); });
  EXPECT_NE(m.find("SAM: the base optimizer is null"), std::string::npos) << m;
  // Options changed after construction are checked at the step.
  tram::SAM opt(base());
  opt.group_options(0).rho(std::nan(""));
  m = message_of([&] { opt.step(p.loss_closure(opt)); });
  EXPECT_NE(m.find("SAM: invalid rho: nan in group 0"), std::string::npos) << m;
  // The LossClosure of a method that needs logits says what to use instead.
  auto tram_opt = tram::make_optimizer("tram-prev", p.params());
  m = message_of([&] { tram_opt->step(p.loss_closure(*tram_opt)); });
  EXPECT_NE(m.find("TRAM-θt-1 needs the model's logits"), std::string::npos) << m;
}

TEST(Contracts, PerGroupOptionsSurviveAddedGroups) {
  Problem p;
  auto extra = torch::zeros({2}, torch::kFloat64).requires_grad_(true);
  std::vector<torch::optim::OptimizerParamGroup> groups{{{p.weight}}, {{p.bias}}};
  auto base = std::make_shared<torch::optim::SGD>(groups, torch::optim::SGDOptions(0.1));
  tram::ASAM opt(base, tram::ASAMOptions().rho(0.3));
  opt.group_options(1).rho(0.7).eta(0.2);
  base->add_param_group(torch::optim::OptimizerParamGroup({extra}));
  opt.step(p.loss_closure(opt));
  ASSERT_EQ(opt.param_groups().size(), 3u);
  EXPECT_EQ(opt.group_options(0).rho(), 0.3);
  EXPECT_EQ(opt.group_options(1).rho(), 0.7);
  EXPECT_EQ(opt.group_options(1).eta(), 0.2);
  EXPECT_EQ(opt.group_options(2).rho(), 0.3);  // the defaults of this ASAM, not GroupOptions'
  // A group added to the wrapper itself would never be stepped: rejected.
  opt.add_param_group(torch::optim::OptimizerParamGroup({torch::zeros({1}, torch::requires_grad())}));
  EXPECT_THROW(opt.step(p.loss_closure(opt)), c10::Error);
}

TEST(Contracts, SchedulerOnTheWrapperChangesTheBaseLearningRate) {
  Problem p;
  auto base = std::make_shared<torch::optim::SGD>(p.params(), torch::optim::SGDOptions(0.8));
  tram::SAM opt(base);
  torch::optim::StepLR scheduler(opt, /*step_size=*/1, /*gamma=*/0.5);
  opt.step(p.loss_closure(opt));
  scheduler.step();  // LibTorch's StepLR decays from its second step() on
  scheduler.step();
  EXPECT_DOUBLE_EQ(base->param_groups()[0].options().get_lr(), 0.4);
  // And the other way round: a scheduler on the base is what the wrapper reports.
  torch::optim::StepLR base_scheduler(*base, 1, 0.25);
  base_scheduler.step();
  base_scheduler.step();
  EXPECT_DOUBLE_EQ(opt.param_groups()[0].options().get_lr(), 0.1);
}

TEST(Serialization, SaveLoadResumesBitIdentically) {
  for (const std::string method : {"sam", "asam", "fsam"}) {
    const auto options = tram::parse_options("base=adam,lr=0.01");
    Problem straight;
    auto opt = tram::make_optimizer(method, straight.params(), options);
    for (int i = 0; i < 6; ++i) opt->step(straight.forward_closure());

    Problem first_half;
    auto opt1 = tram::make_optimizer(method, first_half.params(), options);
    opt1->group_options(0).rho(opt1->group_options(0).rho());  // unchanged, but through the setter
    for (int i = 0; i < 3; ++i) opt1->step(first_half.forward_closure());
    std::stringstream buffer;
    torch::save(*opt1, buffer);

    Problem resumed;
    for (size_t i = 0; i < resumed.params().size(); ++i) {
      torch::NoGradGuard no_grad;
      resumed.params()[i].copy_(first_half.params()[i]);
    }
    auto opt2 = tram::make_optimizer(method, resumed.params(), options);
    torch::load(*opt2, buffer);
    EXPECT_EQ(opt2->step_count(), 3);
    for (int i = 0; i < 3; ++i) opt2->step(resumed.forward_closure());
    for (size_t i = 0; i < straight.params().size(); ++i) {
      EXPECT_TRUE(torch::equal(straight.params()[i], resumed.params()[i])) << method << " tensor " << i;
    }
  }
}

TEST(Serialization, GroupOptionsAreRestoredAndMethodMismatchIsRejected) {
  Problem p;
  auto opt = tram::make_optimizer("asam", p.params(), tram::parse_options("lr=0.1"));
  opt->group_options(0).rho(0.123).eta(0.456);
  std::stringstream buffer;
  torch::save(*opt, buffer);
  auto other = tram::make_optimizer("asam", p.params(), tram::parse_options("lr=0.1"));
  torch::load(*other, buffer);
  EXPECT_EQ(other->group_options(0).rho(), 0.123);
  EXPECT_EQ(other->group_options(0).eta(), 0.456);
  buffer.seekg(0);
  auto sam = tram::make_optimizer("sam", p.params(), tram::parse_options("lr=0.1"));
  try {
    torch::load(*sam, buffer);
    FAIL() << "loading an ASAM checkpoint into SAM must fail";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("written by a ASAM optimizer"), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(EvalModeGuard, RestoresEverySubmodulesOwnModeAlsoAfterAThrow) {
  // A model in training with one submodule deliberately frozen in eval mode:
  // a bare eval() ... train() pair would turn the frozen one back on.
  auto model = torch::nn::Sequential(torch::nn::Linear(2, 2), torch::nn::Dropout(0.5), torch::nn::Linear(2, 2));
  model->train();
  model[1]->eval();
  const auto modes = [&] {
    std::vector<bool> flags;
    for (const auto& m : model->modules(/*include_self=*/true)) flags.push_back(m->is_training());
    return flags;
  };
  const std::vector<bool> before = modes();
  EXPECT_EQ(before, (std::vector<bool>{true, true, false, true}));
  {
    tram::EvalModeGuard eval(*model);
    for (bool training : modes()) EXPECT_FALSE(training);
  }
  EXPECT_EQ(modes(), before);
  try {
    tram::EvalModeGuard eval(model.ptr().get());
    throw std::runtime_error("forward failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(modes(), before);
  tram::EvalModeGuard none(nullptr);  // a null module is a no-op
}
