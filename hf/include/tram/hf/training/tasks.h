// The task policies of the three programs (see trainer.h): what a batch is,
// the loss, and the evaluation metrics.
//
//   ImageClassificationTask  tram-vit   ViTForImageClassification; MNIST-layout
//                                       IDX directories or CIFAR-100 binary files
//   CausalLmTask             tram-gpt2  GPT2LMHeadModel; text files per domain,
//                                       perplexity per --eval domain
//   TextClassificationTask   tram-xlmr  BERT / RoBERTa / XLM-R classifiers; NLI
//                                       TSV/JSONL or text<TAB>label TSV
//
// Each constructor seeds LibTorch's generators (seed_run) before building the
// model, loads the checkpoint and the data, and prints the load report.
#pragma once

#include <tram/hf/training/trainer.h>

#include <memory>

namespace tram::hf::training {

// torch::manual_seed(--seed + --rank).
void seed_run(const Options& options);

// Copies the tokenizer files found in `from` (vocab.json, merges.txt,
// vocab.txt, sentencepiece.bpe.model, tokenizer.json, ...) into `to`.
void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to);

std::unique_ptr<Task> make_image_classification_task(const Options& options);
std::unique_ptr<Task> make_causal_lm_task(const Options& options);
std::unique_ptr<Task> make_text_classification_task(const Options& options);

// The task of options.program.
std::unique_ptr<Task> make_task(const Options& options);

}  // namespace tram::hf::training
