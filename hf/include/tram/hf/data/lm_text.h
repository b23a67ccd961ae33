// Text for causal language modelling (the GPT-2 example): documents read from
// one file or a directory of files (one domain), tokenized, joined with the
// end-of-text token after every document, and cut into blocks of block_size
// tokens (the last partial block is dropped, as Hugging Face's run_clm does).
//
//   auto docs = read_documents("data/legal", DocumentBoundary::kBlankLine);
//   auto split = split_indices(docs.size(), 0.1, /*seed=*/0);
//   auto train = pack_blocks(tokenize_documents(tokenizer, select(docs, split.train)), 256);
//
// or load_lm_dataset(), which does exactly that. The split is made over
// documents before packing, so no block holds text of both sides.
#pragma once

#include <tram/hf/data/split.h>
#include <tram/hf/tokenizers/tokenizer.h>

#include <torch/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace tram::hf::data {

// Where one document ends and the next begins inside a file.
enum class DocumentBoundary {
  kFile,       // each file is one document
  kBlankLine,  // paragraphs: documents are separated by one or more blank lines
  kLine,       // each non-empty line is a document (e.g. one article per line)
};

struct Document {
  std::string text;
  std::string source;  // "file" or "file:first line"
};

// A file, or every regular file under a directory (recursively, in byte-wise
// path order, so the order never depends on the filesystem; hidden files
// skipped). Line ends are "\n" in the text ("\r\n" is accepted); empty
// documents are dropped. Throws naming the path when nothing can be read.
std::vector<Document> read_documents(const std::filesystem::path& file_or_directory,
                                     DocumentBoundary boundary = DocumentBoundary::kFile);

// The documents' ids, each followed by `separator` (-1: the tokenizer's eos;
// an error when it has none).
std::vector<int64_t> tokenize_documents(const tokenizers::Tokenizer& tokenizer,
                                        const std::vector<Document>& documents, int64_t separator = -1);

// [tokens.size() / block_size, block_size] int64; the remainder is dropped.
torch::Tensor pack_blocks(const std::vector<int64_t>& tokens, int64_t block_size);

// The documents at `indices`, in that order.
std::vector<Document> select(const std::vector<Document>& documents, const std::vector<int64_t>& indices);

struct LmDatasetOptions {
  int64_t block_size = 256;
  DocumentBoundary boundary = DocumentBoundary::kFile;
  double validation_fraction = 0.1;  // of the documents; 0: no validation set
  uint64_t seed = 0;
};

struct LmDataset {
  torch::Tensor train;       // [blocks, block_size] int64
  torch::Tensor validation;  // [blocks, block_size] int64; empty [0, block_size] when none
  int64_t train_documents = 0;
  int64_t validation_documents = 0;
};

// read_documents, a document-level split, tokenize and pack each side. Throws
// when a side asked for gets no complete block (say which, and what to change).
LmDataset load_lm_dataset(const std::filesystem::path& file_or_directory,
                          const tokenizers::Tokenizer& tokenizer, const LmDatasetOptions& options = {});

}  // namespace tram::hf::data
