#include "server/model/tokenizer/bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/model/tokenizer/utf8.h"

namespace oft::tokenizer {

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Parse(const Json& j, const std::string& path) {
  auto model = std::make_unique<BpeModel>();
  OFT_ASSIGN_OR_RETURN(const Json* vocab, RequireMember(j, "vocab", path));
  const std::string vpath = Key(path, "vocab");
  if (!vocab->is_object()) {
    return Invalid(vpath, absl::StrCat("expected an object {token: id}, got ", vocab->type_name()));
  }
  for (const auto& [token, id_json] : vocab->items()) {
    OFT_ASSIGN_OR_RETURN(int32_t id, AsId(id_json, Key(vpath, absl::StrCat("\"", token, "\""))));
    if (!IsValidUtf8(token)) return Invalid(vpath, "a token is not valid UTF-8");
    model->vocab_[token] = id;
    model->vocab_r_[id] = token;
    model->max_id_ = std::max(model->max_id_, id);
  }

  OFT_ASSIGN_OR_RETURN(std::optional<std::string> unk, OptionalString(j, "unk_token", path));
  if (unk.has_value()) {
    model->unk_id_ = model->TokenToId(*unk);
    if (!model->unk_id_.has_value()) {
      return Invalid(Key(path, "unk_token"), absl::StrCat("\"", *unk, "\" is not in ", vpath));
    }
  }
  OFT_ASSIGN_OR_RETURN(model->continuing_subword_prefix_,
                       OptionalString(j, "continuing_subword_prefix", path));
  OFT_ASSIGN_OR_RETURN(model->end_of_word_suffix_, OptionalString(j, "end_of_word_suffix", path));
  OFT_ASSIGN_OR_RETURN(model->fuse_unk_, OptionalBool(j, "fuse_unk", path, false));
  OFT_ASSIGN_OR_RETURN(model->byte_fallback_, OptionalBool(j, "byte_fallback", path, false));
  OFT_ASSIGN_OR_RETURN(model->ignore_merges_, OptionalBool(j, "ignore_merges", path, false));
  if (const Json* dropout = Member(j, "dropout"); dropout != nullptr) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      return absl::UnimplementedError(absl::StrCat(
          "tokenizer.json: ", Key(path, "dropout"), " is ", dropout->dump(),
          ": BPE dropout is a training-time augmentation and is not supported; set it to null"));
    }
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    model->byte_ids_[b] = model->TokenToId(name).value_or(-1);
  }

  OFT_ASSIGN_OR_RETURN(const Json* merges, RequireMember(j, "merges", path));
  const std::string mpath = Key(path, "merges");
  if (!merges->is_array()) {
    return Invalid(mpath, absl::StrCat("expected an array, got ", merges->type_name()));
  }
  const size_t prefix_len =
      model->continuing_subword_prefix_ ? model->continuing_subword_prefix_->size() : 0;
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& m = (*merges)[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) {
        return Invalid(
            Index(mpath, i),
            absl::StrCat("expected \"left right\" (two tokens separated by a space), got \"", s,
                         "\""));
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return Invalid(
          Index(mpath, i),
          absl::StrCat("expected \"left right\" or [\"left\", \"right\"], got ", m.dump()));
    }
    const auto a_id = model->TokenToId(a);
    const auto b_id = model->TokenToId(b);
    // With a continuing_subword_prefix ("##"), "a" + "##b" makes "ab".
    const bool b_prefixed =
        prefix_len > 0 && b.compare(0, prefix_len, *model->continuing_subword_prefix_) == 0;
    const std::string merged = a + b.substr(b_prefixed ? prefix_len : 0);
    const auto new_id = model->TokenToId(merged);
    for (const auto& [tok, id] : {std::pair<const std::string*, std::optional<int32_t>>(&a, a_id),
                                  {&b, b_id},
                                  {&merged, new_id}}) {
      if (!id.has_value()) {
        return Invalid(Index(mpath, i), absl::StrCat("token \"", *tok, "\" is not in ", vpath));
      }
    }
    // A repeated pair keeps its last rank, as in `tokenizers`.
    model->merges_[PairKey(*a_id, *b_id)] = MergeInfo{static_cast<int32_t>(i), *new_id};
  }
  return model;
}

void BpeModel::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto id = TokenToId(word); id.has_value()) {
      ids->push_back(*id);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool removed;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&](int32_t id) {
    const int32_t n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, false});
  };
  // The unk being fused (fuse_unk) or not yet added. (A plain pair rather than
  // std::optional: GCC 12 -O3 reports a false -Wmaybe-uninitialized for the optional here.)
  bool has_pending_unk = false;
  int32_t pending_unk = 0;
  std::string s;
  for (size_t i = 0; i < word.size();) {
    const size_t n = Utf8SeqLen(word[i]);
    const bool first = i == 0;
    const bool last = i + n >= word.size();
    s.clear();
    if (!first && continuing_subword_prefix_) s.append(*continuing_subword_prefix_);
    s.append(word.data() + i, n);
    if (last && end_of_word_suffix_) s.append(*end_of_word_suffix_);
    i += n;
    if (auto id = TokenToId(s); id.has_value()) {
      if (has_pending_unk) add(pending_unk);
      has_pending_unk = false;
      add(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : s) all = all && byte_ids_[c] >= 0;
      if (all) {
        // Like `tokenizers`, a pending unk is not flushed before the byte tokens.
        for (unsigned char c : s) add(byte_ids_[c]);
        continue;
      }
    }
    if (unk_id_) {
      if (has_pending_unk && !fuse_unk_) add(pending_unk);
      has_pending_unk = true;
      pending_unk = *unk_id_;
    }
  }
  if (has_pending_unk) add(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator<(const Candidate& o) const {  // Max-heap: lowest rank, then leftmost, on top.
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Candidate> storage;
  storage.reserve(symbols.size());
  std::priority_queue<Candidate> queue(std::less<Candidate>(), std::move(storage));
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const MergeInfo* m = FindMerge(symbols[k].id, symbols[k + 1].id)) {
      queue.push({m->rank, static_cast<int32_t>(k), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.removed || cur.next < 0) continue;
    Symbol& right = symbols[cur.next];
    const MergeInfo* m = FindMerge(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // Stale entry.
    cur.id = top.new_id;
    right.removed = true;
    cur.next = right.next;
    if (cur.next >= 0) symbols[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const MergeInfo* pm = FindMerge(symbols[cur.prev].id, cur.id)) {
        queue.push({pm->rank, cur.prev, pm->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const MergeInfo* nm = FindMerge(cur.id, symbols[cur.next].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  for (const Symbol& sym : symbols) {
    if (!sym.removed) ids->push_back(sym.id);
  }
}

}  // namespace oft::tokenizer
