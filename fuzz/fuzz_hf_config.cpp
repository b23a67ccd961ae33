// Hugging Face config.json (tram::hf::HfConfig) and the accessors the model
// loaders call on it.
#include "fuzz_util.h"

#include <tram/hf/checkpoint.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tram::fuzz::ScratchFiles files;
  const auto path = files.write("config.json", tram::fuzz::as_text(data, size));
  tram::fuzz::reject_cleanly(
      [&] {
        const auto config = tram::hf::HfConfig::load(path);
        (void)config.integer("hidden_size", 768);
        (void)config.number("layer_norm_eps", 1e-12);
        (void)config.boolean("qkv_bias", true);
        (void)config.string("hidden_act", "gelu");
        (void)config.size_pair("image_size", 224);
        (void)config.with_num_labels(config.num_labels());
        (void)config.with_num_labels(3);
        config.expect_model_type({"bert", "roberta", "xlm-roberta", "gpt2", "vit"});
      },
      path.filename().string());
  return 0;
}
