#include "server/model/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/model/tokenizer/added_tokens.h"
#include "server/model/tokenizer/bpe_model.h"
#include "server/model/tokenizer/decoders.h"
#include "server/model/tokenizer/json_fields.h"
#include "server/model/tokenizer/normalizers.h"
#include "server/model/tokenizer/post_processors.h"
#include "server/model/tokenizer/pre_tokenizers.h"
#include "server/model/tokenizer/utf8.h"

namespace oft {
namespace tokenizer {

// The components of one tokenizer.json, and the order in which Encode and Decode run them.
class Pipeline {
 public:
  static absl::StatusOr<std::unique_ptr<Pipeline>> Parse(const Json& root);

  std::vector<int32_t> Encode(absl::string_view text, bool add_special_tokens) const;
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const {
    if (auto it = added_by_content_.find(token); it != added_by_content_.end()) return it->second;
    return model_->TokenToId(token);
  }
  const std::string* IdToToken(int32_t id) const {
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return &it->second->content;
    return model_->IdToToken(id);
  }

  std::vector<std::unique_ptr<AddedToken>> added_;
  absl::flat_hash_map<std::string, int32_t> added_by_content_;
  absl::flat_hash_map<int32_t, const AddedToken*> added_by_id_;
  absl::flat_hash_set<std::string> special_contents_;
  AddedTokenMatcher raw_matcher_;         // Tokens with normalized: false.
  AddedTokenMatcher normalized_matcher_;  // Tokens with normalized: true (normalized content).
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
};

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Parse(const Json& root) {
  if (!root.is_object()) {
    return Invalid("(root)", absl::StrCat("expected an object, got ", root.type_name()));
  }
  auto p = std::make_unique<Pipeline>();

  OFT_ASSIGN_OR_RETURN(const Json* model, RequireMember(root, "model", ""));
  // A model without "type" is a BPE in the tokenizers serialization (untagged enum), but the
  // `vocab`/`merges` fields must then be present; every current file has the tag.
  OFT_ASSIGN_OR_RETURN(std::optional<std::string> model_type,
                       OptionalString(*model, "type", "model"));
  if (model_type.has_value() && *model_type != "BPE") {
    return Unsupported("model", "model", *model_type, "BPE");
  }
  OFT_ASSIGN_OR_RETURN(p->model_, BpeModel::Parse(*model, "model"));

  if (const Json* n = Member(root, "normalizer"); n != nullptr) {
    OFT_ASSIGN_OR_RETURN(p->normalizer_, ParseNormalizer(*n, "normalizer"));
  }
  if (const Json* pt = Member(root, "pre_tokenizer"); pt != nullptr) {
    OFT_ASSIGN_OR_RETURN(p->pre_tokenizer_, ParsePreTokenizer(*pt, "pre_tokenizer"));
  }
  if (const Json* d = Member(root, "decoder"); d != nullptr) {
    OFT_ASSIGN_OR_RETURN(p->decoder_, ParseDecoder(*d, "decoder"));
  }

  if (const Json* added = Member(root, "added_tokens"); added != nullptr) {
    if (!added->is_array()) return Invalid("added_tokens", "expected an array");
    for (size_t i = 0; i < added->size(); ++i) {
      OFT_ASSIGN_OR_RETURN(std::unique_ptr<AddedToken> token,
                           ParseAddedToken((*added)[i], Index("added_tokens", i)));
      p->added_by_content_[token->content] = token->id;
      p->added_by_id_[token->id] = token.get();
      p->added_.push_back(std::move(token));
    }
  }
  for (const auto& token : p->added_) {
    token->decode_text = token->content;
    if (token->special) p->special_contents_.insert(token->content);
    if (token->normalized) {
      if (p->normalizer_ != nullptr) p->normalizer_->Normalize(&token->decode_text);
      p->normalized_matcher_.Add(token->decode_text, token.get());
    } else {
      p->raw_matcher_.Add(token->content, token.get());
    }
  }

  if (const Json* pp = Member(root, "post_processor"); pp != nullptr) {
    OFT_ASSIGN_OR_RETURN(p->post_processor_, ParsePostProcessor(*pp, "post_processor"));
  }
  return p;
}

std::vector<int32_t> Pipeline::Encode(absl::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!IsValidUtf8(text)) {
    repaired = Utf8Lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  std::vector<Piece> pieces;
  for (const Segment& raw : raw_matcher_.Split(text)) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    if (raw.start == raw.end) continue;
    std::string normalized(text.substr(raw.start, raw.end - raw.start));
    if (normalizer_ != nullptr) normalizer_->Normalize(&normalized);
    for (const Segment& seg : normalized_matcher_.Split(normalized)) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      if (seg.start == seg.end) continue;
      pieces.clear();
      pieces.push_back(
          {normalized.substr(seg.start, seg.end - seg.start), raw.start == 0 && seg.start == 0});
      if (pre_tokenizer_ != nullptr) pre_tokenizer_->PreTokenize(&pieces);
      for (const Piece& piece : pieces) model_->Tokenize(piece.text, &ids);
    }
  }
  if (add_special_tokens && post_processor_ != nullptr) post_processor_->Process(&ids);
  return ids;
}

std::string Pipeline::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    // Like `tokenizers`: a normalized added token decodes from its normalized form (so the
    // decoder can invert the normalizer), and skipping goes by the special tokens' text.
    const std::string* token = nullptr;
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
      token = &it->second->decode_text;
    } else {
      token = model_->IdToToken(id);
    }
    if (token == nullptr) continue;
    if (skip_special_tokens && special_contents_.contains(*token)) continue;
    tokens.push_back(*token);
  }
  if (decoder_ == nullptr) return absl::StrJoin(tokens, " ");
  decoder_->DecodeChain(&tokens);
  return absl::StrJoin(tokens, "");
}

}  // namespace tokenizer

// ------------------------------------------------------------------------------------------

namespace {

// The content of a tokenizer_config.json special-token entry: "text" or {"content": "text"}.
std::optional<std::string> ConfigToken(const nlohmann::json& config, const char* key) {
  const nlohmann::json* m = tokenizer::Member(config, key);
  if (m == nullptr) return std::nullopt;
  if (m->is_string()) return m->get<std::string>();
  if (const nlohmann::json* c = tokenizer::Member(*m, "content"); c != nullptr && c->is_string()) {
    return c->get<std::string>();
  }
  return std::nullopt;
}

absl::StatusOr<nlohmann::json> ParseJson(const std::string& text, absl::string_view what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not valid JSON (error at byte ", e.byte, "): ", e.what()));
  }
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<tokenizer::Pipeline> pipeline)
    : pipeline_(std::move(pipeline)) {}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  const auto read = [](const std::string& p) -> std::optional<std::string> {
    std::ifstream in(p, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  std::optional<std::string> text = read(path);
  if (!text.has_value()) {
    return absl::NotFoundError(absl::StrCat("cannot read tokenizer file ", path));
  }
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  std::string config = read(dir + "tokenizer_config.json").value_or("");
  auto tokenizer = FromJson(*text, config);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    const std::string& json_text, const std::string& tokenizer_config_json) {
  OFT_ASSIGN_OR_RETURN(nlohmann::json root, ParseJson(json_text, "tokenizer.json"));
  std::unique_ptr<tokenizer::Pipeline> pipeline;
  try {
    OFT_ASSIGN_OR_RETURN(pipeline, tokenizer::Pipeline::Parse(root));
  } catch (const nlohmann::json::exception& e) {
    // The accessors check types first; this is a safety net so no exception escapes.
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", e.what()));
  }
  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer(std::move(pipeline)));
  const tokenizer::Pipeline& p = *tokenizer->pipeline_;

  int32_t max_id = p.model_->max_id();
  for (const auto& token : p.added_) {
    max_id = std::max(max_id, token->id);
    if (token->special) tokenizer->special_ids_.insert(token->id);
  }
  tokenizer->vocab_size_ = max_id + 1;

  if (p.post_processor_ != nullptr) {
    p.post_processor_->SpecialIds(&tokenizer->bos_id_, &tokenizer->eos_id_);
    p.post_processor_->Around(&tokenizer->special_prefix_, &tokenizer->special_suffix_);
  }
  const auto first_known =
      [&p](std::initializer_list<const char*> names) -> std::optional<int32_t> {
    for (const char* name : names) {
      if (auto id = p.TokenToId(name); id.has_value()) return id;
    }
    return std::nullopt;
  };
  if (!tokenizer->bos_id_) tokenizer->bos_id_ = first_known({"<s>", "<|begin_of_text|>", "<bos>"});
  if (!tokenizer->eos_id_) {
    tokenizer->eos_id_ = first_known({"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"});
  }
  if (!tokenizer_config_json.empty()) {
    OFT_ASSIGN_OR_RETURN(nlohmann::json config,
                         ParseJson(tokenizer_config_json, "tokenizer_config.json"));
    for (auto [key, field] : {std::pair("bos_token", &tokenizer->bos_id_),
                              std::pair("eos_token", &tokenizer->eos_id_)}) {
      std::optional<std::string> name = ConfigToken(config, key);
      if (!name.has_value()) continue;
      std::optional<int32_t> id = p.TokenToId(*name);
      if (!id.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: ", key, " \"", *name,
                                                       "\" is not in the vocabulary"));
      }
      *field = id;
    }
  }
  return tokenizer;
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text, bool add_special_tokens) const {
  return pipeline_->Encode(text, add_special_tokens);
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  return pipeline_->Decode(ids, skip_special_tokens);
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  return pipeline_->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  const std::string* token = pipeline_->IdToToken(id);
  if (token == nullptr) return std::nullopt;
  return *token;
}

}  // namespace oft
