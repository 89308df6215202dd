#include "server/model/tokenizer/added_tokens.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/model/tokenizer/utf8.h"

namespace oft::tokenizer {

namespace {

bool IsWordChar(absl::string_view s, size_t i) {
  // Approximates Rust regex's Unicode \w with PCRE2-free checks: ASCII word characters and
  // every non-ASCII non-whitespace character count as word characters.
  const uint32_t c = DecodeUtf8(s, i);
  if (c < 0x80) return std::isalnum(static_cast<int>(c)) || c == '_';
  return !IsWhitespace(c);
}
bool EndsWithWord(absl::string_view s) {
  if (s.empty()) return false;
  size_t b = s.size() - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  return IsWordChar(s, b);
}
bool StartsWithWord(absl::string_view s) { return !s.empty() && IsWordChar(s, 0); }

}  // namespace

absl::StatusOr<std::unique_ptr<AddedToken>> ParseAddedToken(const Json& t,
                                                            const std::string& path) {
  auto token = std::make_unique<AddedToken>();
  OFT_ASSIGN_OR_RETURN(const Json* id, RequireMember(t, "id", path));
  OFT_ASSIGN_OR_RETURN(token->id, AsId(*id, Key(path, "id")));
  OFT_ASSIGN_OR_RETURN(token->content, RequireString(t, "content", path));
  OFT_ASSIGN_OR_RETURN(token->special, OptionalBool(t, "special", path, false));
  OFT_ASSIGN_OR_RETURN(token->single_word, OptionalBool(t, "single_word", path, false));
  OFT_ASSIGN_OR_RETURN(token->lstrip, OptionalBool(t, "lstrip", path, false));
  OFT_ASSIGN_OR_RETURN(token->rstrip, OptionalBool(t, "rstrip", path, false));
  OFT_ASSIGN_OR_RETURN(token->normalized, OptionalBool(t, "normalized", path, !token->special));
  if (!IsValidUtf8(token->content)) return Invalid(Key(path, "content"), "not valid UTF-8");
  return token;
}

AddedTokenMatcher::AddedTokenMatcher() : nodes_(1) { first_byte_.fill(false); }

void AddedTokenMatcher::Add(const std::string& pattern, const AddedToken* token) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (unsigned char c : pattern) {
    auto it = nodes_[node].next.find(c);
    if (it == nodes_[node].next.end()) {
      nodes_.emplace_back();
      it = nodes_[node].next.emplace(c, static_cast<int32_t>(nodes_.size() - 1)).first;
    }
    node = it->second;
  }
  if (nodes_[node].token == nullptr) nodes_[node].token = token;
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
  empty_ = false;
}

std::vector<Segment> AddedTokenMatcher::Split(absl::string_view s) const {
  std::vector<Segment> out;
  if (empty_ || s.empty()) {
    out.push_back({0, s.size(), -1});
    return out;
  }
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t start = 0, stop = 0;
    const AddedToken* token = FindFrom(s, pos, &start, &stop);
    if (token == nullptr) break;
    pos = stop;
    if (token->single_word) {
      const bool start_space = start == 0 || !EndsWithWord(s.substr(0, start));
      const bool stop_space = stop == s.size() || !StartsWithWord(s.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (token->lstrip) {
      size_t k = start;
      while (k > 0) {
        size_t b = k - 1;
        while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
        if (!IsWhitespace(DecodeUtf8(s, b))) break;
        k = b;
      }
      start = std::max(k, start_offset);
    }
    if (token->rstrip) {
      while (stop < s.size() && IsWhitespace(DecodeUtf8(s, stop))) stop += Utf8SeqLen(s[stop]);
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, token->id});
    start_offset = stop;
  }
  if (start_offset != s.size()) out.push_back({start_offset, s.size(), -1});
  return out;
}

const AddedToken* AddedTokenMatcher::FindFrom(absl::string_view s, size_t from, size_t* start,
                                              size_t* stop) const {
  for (size_t i = from; i < s.size(); ++i) {
    if (!first_byte_[static_cast<unsigned char>(s[i])]) continue;
    const AddedToken* best = nullptr;
    int32_t node = 0;
    for (size_t k = i; k < s.size(); ++k) {
      auto it = nodes_[node].next.find(static_cast<unsigned char>(s[k]));
      if (it == nodes_[node].next.end()) break;
      node = it->second;
      if (nodes_[node].token != nullptr) {
        best = nodes_[node].token;
        *stop = k + 1;
      }
    }
    if (best != nullptr) {
      *start = i;
      return best;
    }
  }
  return nullptr;
}

}  // namespace oft::tokenizer
