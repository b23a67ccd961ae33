// Methods by name: every name builds, options reach the right place, and
// mistakes are rejected with the valid choices.
#include <tram/tram.h>

#include "test_util.h"

namespace {

using tram::test::error_of;

TEST(Factory, EveryNameAndCombinationBuildsAndSteps) {
  std::vector<std::string> names = tram::method_names();
  names.insert(names.end(), {"asam+trpo", "sam+r3f", "fsam+mesa", "tram-prev+r3f"});
  for (const auto& name : names) {
    tram::test::Problem p;
    auto opt = tram::make_optimizer(name, p.params(), tram::parse_options("lr=0.1"));
    const double before = p.loss().item<double>();
    for (int i = 0; i < 3; ++i) opt->step(p.forward_closure());
    EXPECT_LT(p.loss().item<double>(), before) << name;
    EXPECT_EQ(opt->step_count(), 3) << name;
  }
}

TEST(Factory, OptionsReachTheMethodAndTheBase) {
  tram::test::Problem p;
  auto opt = tram::make_optimizer("asam", p.params(), tram::parse_options("base=adamw,lr=0.003,beta1=0.8,rho=0.3,eta=0.02"));
  EXPECT_EQ(opt->method().name(), "ASAM");
  EXPECT_EQ(opt->group_options(0).rho(), 0.3);
  EXPECT_EQ(opt->group_options(0).eta(), 0.02);
  EXPECT_DOUBLE_EQ(opt->param_groups()[0].options().get_lr(), 0.003);
  auto& adamw = dynamic_cast<torch::optim::AdamWOptions&>(opt->base().param_groups()[0].options());
  EXPECT_EQ(std::get<0>(adamw.betas()), 0.8);

  auto [config, group] = tram::method_config("tram-noise", tram::parse_options("sigma=0.5,noise=uniform,max_radius=0.2"));
  EXPECT_EQ(config.name(), "TRAM-ε");
  EXPECT_EQ(config.trust_region()->target->noise()->sigma(), 0.5);
  EXPECT_EQ(config.trust_region()->target->noise()->distribution(), tram::NoiseDistribution::kUniform);
  EXPECT_EQ(config.trust_region()->max_radius.value(), 0.2);
  auto fisher = tram::method_config("fsam+r3f", tram::parse_options("gamma=0.3,reg_sigma=1e-4,lambda=2")).first;
  EXPECT_EQ(fisher.name(), "FSAM+R3F");
  EXPECT_EQ(fisher.regularizer()->noise()->sigma(), 1e-4);
  EXPECT_EQ(fisher.regularizer()->weight(), 2.0);
}

TEST(Factory, MistakesListTheValidChoices) {
  tram::test::Problem p;
  auto m = error_of([&] { tram::make_optimizer("sma", p.params()); });
  EXPECT_NE(m.find("unknown method 'sma'"), std::string::npos) << m;
  EXPECT_NE(m.find("tram-fisher"), std::string::npos) << m;
  m = error_of([&] { tram::make_optimizer("sam", p.params(), tram::parse_options("rhoo=0.1")); });
  EXPECT_NE(m.find("unknown option 'rhoo'"), std::string::npos) << m;
  EXPECT_NE(m.find("rho"), std::string::npos) << m;
  EXPECT_NE(m.find("momentum"), std::string::npos) << m;
  m = error_of([&] { tram::make_optimizer("tram-prev", p.params(), tram::parse_options("divergence=sideways")); });
  EXPECT_NE(m.find("forward, reverse, symmetric"), std::string::npos) << m;
  m = error_of([&] { tram::make_optimizer("sam", p.params(), tram::parse_options("base=lbfgs")); });
  EXPECT_NE(m.find("sgd, adam, adamw"), std::string::npos) << m;
  m = error_of([&] { tram::make_optimizer("sam+asam", p.params()); });
  EXPECT_NE(m.find("unknown method"), std::string::npos) << m;
  EXPECT_THROW(tram::parse_options("rho"), c10::Error);
}

TEST(Factory, OptionKeysAreTheOnesTheMethodReads) {
  auto keys = tram::option_keys("tram-noise");
  for (const char* key : {"base", "lr", "eta", "scale", "max_radius", "sigma", "noise", "divergence", "reduction"}) {
    EXPECT_NE(std::find(keys.begin(), keys.end(), key), keys.end()) << key;
  }
  auto sam = tram::option_keys("sam");
  EXPECT_EQ(std::find(sam.begin(), sam.end(), "scale"), sam.end());
}

}  // namespace
