#include <tram/hf/data/lm_text.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace tram::hf::data {
namespace {

namespace fs = std::filesystem;

bool blank(const std::string& line) { return line.find_first_not_of(" \t\r\f\v") == std::string::npos; }

void read_file_documents(const fs::path& file, DocumentBoundary boundary, std::vector<Document>& out) {
  const std::string where = file.string();
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(where + ": cannot open the file");
  if (boundary == DocumentBoundary::kFile) {
    std::ostringstream text;
    text << in.rdbuf();
    std::string content = text.str();
    std::string::size_type kept = 0;  // "\r\n" -> "\n" in place
    for (std::string::size_type i = 0; i < content.size(); ++i)
      if (!(content[i] == '\r' && i + 1 < content.size() && content[i + 1] == '\n')) content[kept++] = content[i];
    content.resize(kept);
    while (!content.empty() && content.back() == '\n') content.pop_back();
    if (!blank(content)) out.push_back({std::move(content), where});
    return;
  }
  std::string line, paragraph;
  int64_t paragraph_line = 0;
  const auto flush = [&] {
    if (!paragraph.empty()) out.push_back({std::move(paragraph), where + ":" + std::to_string(paragraph_line)});
    paragraph.clear();
  };
  for (int64_t line_number = 1; std::getline(in, line); ++line_number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (boundary == DocumentBoundary::kLine) {
      if (!blank(line)) out.push_back({line, where + ":" + std::to_string(line_number)});
      continue;
    }
    if (blank(line)) {
      flush();
    } else {
      if (paragraph.empty()) paragraph_line = line_number;
      else paragraph += '\n';
      paragraph += line;
    }
  }
  flush();
}

}  // namespace

std::vector<Document> read_documents(const fs::path& file_or_directory, DocumentBoundary boundary) {
  std::error_code error;
  const std::string where = file_or_directory.string();
  if (!fs::exists(file_or_directory, error))
    throw std::runtime_error(where + ": no such file or directory");
  std::vector<fs::path> files;
  if (fs::is_directory(file_or_directory)) {
    for (auto it = fs::recursive_directory_iterator(file_or_directory); it != fs::recursive_directory_iterator(); ++it) {
      const std::string name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) files.push_back(it->path());
    }
    // Byte-wise order of the generic form: the same on every filesystem and locale.
    std::sort(files.begin(), files.end(),
              [](const fs::path& a, const fs::path& b) { return a.generic_string() < b.generic_string(); });
    if (files.empty()) throw std::runtime_error(where + ": the directory holds no (non-hidden) files");
  } else {
    files.push_back(file_or_directory);
  }
  std::vector<Document> documents;
  for (const fs::path& file : files) read_file_documents(file, boundary, documents);
  if (documents.empty()) throw std::runtime_error(where + ": no text (every file is empty or blank)");
  return documents;
}

std::vector<int64_t> tokenize_documents(const tokenizers::Tokenizer& tokenizer,
                                        const std::vector<Document>& documents, int64_t separator) {
  if (separator < 0) separator = tokenizer.special_tokens().eos;
  if (separator < 0)
    throw std::invalid_argument("tokenize_documents: " + tokenizer.name() +
                                " has no end-of-text token; pass the separator id to put between documents");
  std::vector<int64_t> tokens;
  for (const Document& document : documents) {
    const std::vector<int64_t> ids = tokenizer.encode(document.text);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    tokens.push_back(separator);
  }
  return tokens;
}

torch::Tensor pack_blocks(const std::vector<int64_t>& tokens, int64_t block_size) {
  if (block_size <= 0)
    throw std::invalid_argument("pack_blocks: block_size must be positive, got " + std::to_string(block_size));
  const int64_t blocks = static_cast<int64_t>(tokens.size()) / block_size;
  auto packed = torch::empty({blocks, block_size}, torch::kInt64);
  std::copy_n(tokens.data(), blocks * block_size, packed.data_ptr<int64_t>());
  return packed;
}

std::vector<Document> select(const std::vector<Document>& documents, const std::vector<int64_t>& indices) {
  std::vector<Document> out;
  out.reserve(indices.size());
  for (int64_t i : indices) out.push_back(documents.at(static_cast<size_t>(i)));
  return out;
}

LmDataset load_lm_dataset(const fs::path& file_or_directory, const tokenizers::Tokenizer& tokenizer,
                          const LmDatasetOptions& options) {
  const std::string where = file_or_directory.string();
  const std::vector<Document> documents = read_documents(file_or_directory, options.boundary);
  const auto count = static_cast<int64_t>(documents.size());
  if (options.validation_fraction > 0 && count < 2)
    throw std::runtime_error(where + ": one document cannot be split into training and validation; "
                             "use DocumentBoundary::kBlankLine or kLine, or validation_fraction 0");
  const Split split = split_indices(count, options.validation_fraction, options.seed);
  LmDataset dataset;
  dataset.train_documents = static_cast<int64_t>(split.train.size());
  dataset.validation_documents = static_cast<int64_t>(split.validation.size());
  dataset.train = pack_blocks(tokenize_documents(tokenizer, select(documents, split.train)), options.block_size);
  dataset.validation =
      pack_blocks(tokenize_documents(tokenizer, select(documents, split.validation)), options.block_size);
  const auto too_small = [&](const char* side, int64_t docs) {
    return std::runtime_error(where + ": the " + std::string(side) + " side (" + std::to_string(docs) +
                              " documents) has fewer than block_size = " + std::to_string(options.block_size) +
                              " tokens; lower block_size or give it more text");
  };
  if (dataset.train.size(0) == 0) throw too_small("training", dataset.train_documents);
  if (options.validation_fraction > 0 && dataset.validation.size(0) == 0)
    throw too_small("validation", dataset.validation_documents);
  return dataset;
}

}  // namespace tram::hf::data
