#!/usr/bin/env python3
"""Writes the logits-parity fixtures of the example models (ViT, GPT-2, BERT,
RoBERTa, XLM-R) under hf/tests/fixtures/models/<name>/.

Each fixture is a TINY randomly initialised Hugging Face model, saved exactly
as `save_pretrained` writes it (config.json + model.safetensors, the format
of every checkpoint on the Hub), plus `io.safetensors` holding the inputs of
one batch and the logits Hugging Face computes for it in eval mode. The C++
tests (hf/tests/test_models.cpp) load the checkpoint into the C++
models and compare logits.

CI does not run this script: it uses the committed fixtures. To regenerate
them (deterministic for a given torch/transformers version; nothing is
downloaded):

    .venv/bin/python -m pip install transformers safetensors
    .venv/bin/python tools/make_model_fixtures.py

Choices that make the parity test sharp:
- Every parameter gets extra Gaussian noise after Hugging Face's own
  initialisation, so LayerNorm weights are not exactly 1 and biases not 0
  (a swapped weight/bias or a missing bias shows), and attention is far from
  uniform (a wrong mask shows).
- Dropout probabilities are nonzero: the logits are computed in eval mode,
  so the C++ side must honour train/eval too.
- Encoder batches contain a padded row (attention mask zeros; RoBERTa's
  position ids then depend on the padding), GPT-2 a batch of two with a
  right-padded row; BERT has token types 0 and 1.
- Some checkpoints are stored in float16/bfloat16 to keep the files small
  and to exercise dtype conversion on load; the reference logits are then
  computed in float32 from the same rounded weights, so parity stays exact
  up to float32 arithmetic.
"""

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    RobertaConfig,
    RobertaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

# Tiny shapes shared by every fixture.
HIDDEN = 32
LAYERS = 2
HEADS = 4
INTERMEDIATE = 37  # odd on purpose: catches a transposed MLP weight
VOCAB = 100
MAX_POSITIONS = 24
NUM_LABELS = 3
DROPOUT = 0.1
# Added to every parameter after HF's init (std 0.02 makes nearly trivial models).
PARAMETER_NOISE = 0.2
SEED = 1234

ENCODER_BATCH = 3
ENCODER_LENGTH = 8
ENCODER_PADDED = 3  # pad positions at the end of row 1


def label_maps(num_labels):
    id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def randomize(model, storage_dtype):
    """Adds noise to every parameter, then rounds to the storage dtype so the
    float32 reference logits use exactly the weights that are saved."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * PARAMETER_NOISE)
            parameter.copy_(parameter.to(storage_dtype).float())


def save_fixture(root, name, model, storage_dtype, inputs, logits):
    directory = os.path.join(root, name)
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    model.to(storage_dtype).save_pretrained(directory)
    # Only config.json and model.safetensors are fixtures; generation configs
    # and the like are not read by the C++ side.
    for entry in os.listdir(directory):
        if entry not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(directory, entry))
    tensors = {key: value.contiguous() for key, value in inputs.items()}
    tensors["logits"] = logits.float().contiguous()
    save_file(tensors, os.path.join(directory, "io.safetensors"), metadata={"format": "pt"})
    sizes = {entry: os.path.getsize(os.path.join(directory, entry)) for entry in sorted(os.listdir(directory))}
    print(f"{name}: logits {tuple(logits.shape)}, files {json.dumps(sizes)}")


def reference_logits(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def encoder_inputs(generator, bos, eos, pad, with_token_types):
    """A batch with a full row, a padded row and a third full row; every row
    starts with the bos/CLS token and ends its real part with eos/SEP."""
    input_ids = torch.randint(3, VOCAB, (ENCODER_BATCH, ENCODER_LENGTH), generator=generator)
    attention_mask = torch.ones(ENCODER_BATCH, ENCODER_LENGTH, dtype=torch.long)
    input_ids[:, 0] = bos
    input_ids[:, -1] = eos
    real_length = ENCODER_LENGTH - ENCODER_PADDED
    input_ids[1, real_length - 1] = eos
    input_ids[1, real_length:] = pad
    attention_mask[1, real_length:] = 0
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if with_token_types:
        token_type_ids = torch.zeros_like(input_ids)
        token_type_ids[0, ENCODER_LENGTH // 2:] = 1  # a sentence pair
        token_type_ids[2, 3:] = 1
        inputs["token_type_ids"] = token_type_ids
    return inputs


def make_vit(root):
    torch.manual_seed(SEED)
    config = ViTConfig(
        hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
        image_size=16, patch_size=4, num_channels=3, hidden_dropout_prob=DROPOUT,
        attention_probs_dropout_prob=DROPOUT, **label_maps(NUM_LABELS))
    model = ViTForImageClassification._from_config(config, attn_implementation="eager")
    randomize(model, torch.float32)
    inputs = {"pixel_values": torch.randn(2, 3, 16, 16)}
    save_fixture(root, "vit", model, torch.float32, inputs, reference_logits(model, inputs))


def make_gpt2(root):
    torch.manual_seed(SEED + 1)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=MAX_POSITIONS, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
        n_inner=INTERMEDIATE, resid_pdrop=DROPOUT, embd_pdrop=DROPOUT, attn_pdrop=DROPOUT,
        bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="eager")
    randomize(model, torch.float16)
    generator = torch.Generator().manual_seed(SEED + 1)
    length, padded = 7, 2
    input_ids = torch.randint(0, VOCAB - 1, (2, length), generator=generator)
    attention_mask = torch.ones(2, length, dtype=torch.long)
    input_ids[1, length - padded:] = VOCAB - 1  # right padding with the eos token, as GPT-2 users do
    attention_mask[1, length - padded:] = 0
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    save_fixture(root, "gpt2", model, torch.float16, inputs, reference_logits(model, inputs))


def make_bert(root):
    torch.manual_seed(SEED + 2)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_POSITIONS, type_vocab_size=2,
        hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT, pad_token_id=0, **label_maps(NUM_LABELS))
    model = BertForSequenceClassification._from_config(config, attn_implementation="eager")
    randomize(model, torch.float16)
    inputs = encoder_inputs(torch.Generator().manual_seed(SEED + 2), bos=1, eos=2, pad=0, with_token_types=True)
    save_fixture(root, "bert", model, torch.float16, inputs, reference_logits(model, inputs))


def make_roberta_like(root, name, config_class, model_class, storage_dtype, seed):
    torch.manual_seed(seed)
    pad = 1
    config = config_class(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_POSITIONS + pad + 1, type_vocab_size=1,
        hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT, pad_token_id=pad, bos_token_id=0,
        eos_token_id=2, **label_maps(NUM_LABELS))
    model = model_class._from_config(config, attn_implementation="eager")
    randomize(model, storage_dtype)
    inputs = encoder_inputs(torch.Generator().manual_seed(seed), bos=0, eos=2, pad=pad, with_token_types=False)
    save_fixture(root, name, model, storage_dtype, inputs, reference_logits(model, inputs))


def main():
    default_root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hf", "tests", "fixtures",
                                "models")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.normpath(default_root), help="fixture root directory")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    make_vit(args.out)
    make_gpt2(args.out)
    make_bert(args.out)
    make_roberta_like(args.out, "roberta", RobertaConfig, RobertaForSequenceClassification, torch.bfloat16, SEED + 3)
    make_roberta_like(args.out, "xlmr", XLMRobertaConfig, XLMRobertaForSequenceClassification, torch.float32,
                      SEED + 4)


if __name__ == "__main__":
    main()
