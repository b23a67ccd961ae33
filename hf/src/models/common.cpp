#include <tram/hf/models/common.h>

#include <tram/closure.h>

#include <torch/torch.h>

#include <stdexcept>

namespace tram::hf::models {

EmbeddingHook perturb_hook(const tram::Pass& pass) {
  return [&pass](const torch::Tensor& embeddings) { return pass.perturb(embeddings); };
}

Activation parse_activation(const std::string& name, const std::string& origin, const std::string& field) {
  if (name == "gelu") return Activation::kGelu;
  // gelu_new (GPT-2, BERT's TF code), gelu_pytorch_tanh and gelu_fast are the
  // same tanh approximation written three ways.
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::kGeluTanh;
  if (name == "relu") return Activation::kRelu;
  if (name == "silu" || name == "swish") return Activation::kSilu;
  throw std::runtime_error("model config '" + origin + "': field \"" + field + "\" is '" + name +
                           "'; supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, swish");
}

torch::Tensor activate(const torch::Tensor& input, Activation activation) {
  switch (activation) {
    case Activation::kGelu:
      return torch::gelu(input);
    case Activation::kGeluTanh:
      return torch::gelu(input, "tanh");
    case Activation::kRelu:
      return torch::relu(input);
    case Activation::kSilu:
      return torch::silu(input);
  }
  throw std::logic_error("unknown activation");
}

torch::Tensor split_heads(const torch::Tensor& hidden, int64_t num_heads) {
  const int64_t batch = hidden.size(0), length = hidden.size(1);
  return hidden.view({batch, length, num_heads, hidden.size(2) / num_heads}).transpose(1, 2);
}

torch::Tensor merge_heads(const torch::Tensor& heads) {
  const int64_t batch = heads.size(0), num_heads = heads.size(1), length = heads.size(2);
  return heads.transpose(1, 2).reshape({batch, length, num_heads * heads.size(3)});
}

namespace {

// torch.finfo(dtype).min: the value Hugging Face writes into masked scores.
double lowest_finite(torch::ScalarType dtype) {
  double lowest = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(torch::kHalf, torch::kBFloat16, dtype, "lowest_finite",
                                  [&] { lowest = double(std::numeric_limits<scalar_t>::lowest()); });
  return lowest;
}

}  // namespace

torch::Tensor padding_attention_mask(const torch::Tensor& attention_mask, torch::ScalarType dtype) {
  TORCH_CHECK(attention_mask.dim() == 2, "attention_mask must be [batch, length], got ", attention_mask.sizes());
  const torch::Tensor blocked = attention_mask.eq(0).view({attention_mask.size(0), 1, 1, attention_mask.size(1)});
  return torch::zeros(blocked.sizes(), torch::TensorOptions().dtype(dtype).device(attention_mask.device()))
      .masked_fill(blocked, lowest_finite(dtype));
}

torch::Tensor causal_attention_mask(int64_t length, const torch::Tensor& attention_mask, torch::ScalarType dtype,
                                    torch::Device device) {
  torch::Tensor allowed = torch::ones({length, length}, torch::TensorOptions().dtype(torch::kBool).device(device))
                              .tril()
                              .view({1, 1, length, length});
  if (attention_mask.defined()) {
    TORCH_CHECK(attention_mask.dim() == 2 && attention_mask.size(1) == length, "attention_mask must be [batch, ",
                length, "], got ", attention_mask.sizes());
    allowed = allowed & attention_mask.ne(0).view({attention_mask.size(0), 1, 1, length});
  }
  return torch::zeros(allowed.sizes(), torch::TensorOptions().dtype(dtype).device(device))
      .masked_fill(allowed.logical_not(), lowest_finite(dtype));
}

torch::Tensor attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                        const torch::Tensor& additive_mask, double dropout, bool training, double scale, bool causal) {
  std::optional<torch::Tensor> mask;
  if (additive_mask.defined()) mask = additive_mask;
  return torch::scaled_dot_product_attention(query, key, value, mask, training ? dropout : 0.0,
                                             causal && !additive_mask.defined(), scale);
}

void init_weights_like_hf(torch::nn::Module& module, double std) {
  torch::NoGradGuard no_grad;
  auto init_one = [std](torch::nn::Module& m) {
    if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&m)) {
      linear->weight.normal_(0.0, std);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(&m)) {
      conv->weight.normal_(0.0, std);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* embedding = dynamic_cast<torch::nn::EmbeddingImpl*>(&m)) {
      embedding->weight.normal_(0.0, std);
      if (auto padding = embedding->options.padding_idx()) embedding->weight[*padding].zero_();
    } else if (auto* norm = dynamic_cast<torch::nn::LayerNormImpl*>(&m)) {
      if (norm->weight.defined()) norm->weight.fill_(1.0);
      if (norm->bias.defined()) norm->bias.zero_();
    }
  };
  init_one(module);
  // include_self=false: this runs inside constructors, before a shared_ptr owns the module.
  for (const auto& child : module.modules(/*include_self=*/false)) init_one(*child);
}

std::shared_ptr<torch::nn::Module> add_scope(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>(name));
}

}  // namespace tram::hf::models
