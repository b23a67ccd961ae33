#include <tram/hf/tokenizers/xlmr_sentencepiece.h>

#include <sentencepiece_processor.h>

#include <array>
#include <stdexcept>

namespace tram::hf::tokenizers {
namespace {

// fairseq's first four dictionary entries, then <mask> at the end.
constexpr std::array<const char*, 4> kLeadingSpecials = {"<s>", "<pad>", "</s>", "<unk>"};
constexpr const char* kMaskToken = "<mask>";

}  // namespace

XlmrTokenizer::XlmrTokenizer(const std::filesystem::path& sentencepiece_model)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  sentencepiece::util::Status status;
  try {
    status = processor_->Load(sentencepiece_model.string());
  } catch (const std::exception& error) {
    // libsentencepiece reports most bad models by status, but its trie
    // builder (darts-clone) throws, naming no file ("failed to insert key:
    // zero-length key" for a model with an empty piece).
    throw std::runtime_error(sentencepiece_model.string() + ": libsentencepiece cannot load this model: " +
                             error.what());
  }
  if (!status.ok())
    throw std::runtime_error(sentencepiece_model.string() +
                             ": libsentencepiece cannot load this model: " + status.ToString());
  piece_count_ = processor_->GetPieceSize();
  if (processor_->unk_id() != 0)
    throw std::runtime_error(sentencepiece_model.string() + ": the model's <unk> has id " +
                             std::to_string(processor_->unk_id()) +
                             ", but XLM-R's id layout needs it at 0 (train with --unk_id=0)");
  specials_.bos = specials_.cls = 0;
  specials_.pad = 1;
  specials_.eos = specials_.sep = 2;
  specials_.unk = 3;
  specials_.mask = piece_count_ + kFairseqOffset;
}

XlmrTokenizer::~XlmrTokenizer() = default;

std::vector<int64_t> XlmrTokenizer::encode(std::string_view text) const {
  std::vector<int> pieces;
  const auto status = processor_->Encode(text, &pieces);
  if (!status.ok()) throw std::runtime_error(name() + ": libsentencepiece cannot encode: " + status.ToString());
  std::vector<int64_t> ids;
  ids.reserve(pieces.size());
  for (int piece : pieces) ids.push_back(piece == processor_->unk_id() ? specials_.unk : piece + kFairseqOffset);
  return ids;
}

std::string XlmrTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string text;
  std::vector<int> run;  // consecutive ordinary pieces, decoded together
  const auto flush = [&] {
    if (run.empty()) return;
    text += processor_->DecodeIds(run);
    run.clear();
  };
  for (int64_t id : ids) {
    const std::string token = id_to_token(id);  // validates the id
    if (specials_.contains(id)) {
      if (skip_special_tokens) continue;
      flush();
      text += token;
    } else {
      run.push_back(static_cast<int>(id - kFairseqOffset));
    }
  }
  flush();
  return text;
}

std::optional<int64_t> XlmrTokenizer::token_to_id(std::string_view token) const {
  for (size_t i = 0; i < kLeadingSpecials.size(); ++i)
    if (token == kLeadingSpecials[i]) return static_cast<int64_t>(i);
  if (token == kMaskToken) return specials_.mask;
  const int piece = processor_->PieceToId(token);
  // PieceToId answers <unk>'s id (0) for an unknown piece.
  if (piece == processor_->unk_id()) return std::nullopt;
  return piece + kFairseqOffset;
}

std::string XlmrTokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    throw std::out_of_range(name() + ": id " + std::to_string(id) + " is outside the vocabulary [0, " +
                            std::to_string(vocab_size()) + ")");
  if (id < static_cast<int64_t>(kLeadingSpecials.size())) return kLeadingSpecials[static_cast<size_t>(id)];
  if (id == specials_.mask) return kMaskToken;
  return processor_->IdToPiece(static_cast<int>(id - kFairseqOffset));
}

Encoding XlmrTokenizer::add_special_tokens(const std::vector<int64_t>& first,
                                           const std::vector<int64_t>* second) const {
  Encoding encoding;
  encoding.ids.reserve(first.size() + (second ? second->size() : 0) + 4);
  encoding.ids.push_back(specials_.bos);
  encoding.ids.insert(encoding.ids.end(), first.begin(), first.end());
  encoding.ids.push_back(specials_.eos);
  if (second) {
    encoding.ids.push_back(specials_.eos);
    encoding.ids.insert(encoding.ids.end(), second->begin(), second->end());
    encoding.ids.push_back(specials_.eos);
  }
  encoding.type_ids.assign(encoding.ids.size(), 0);
  return encoding;
}

}  // namespace tram::hf::tokenizers
