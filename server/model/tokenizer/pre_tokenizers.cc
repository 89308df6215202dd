#include "server/model/tokenizer/pre_tokenizers.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/model/tokenizer/utf8.h"

namespace oft::tokenizer {
namespace {

struct Part {
  size_t start;
  size_t end;
  bool flag;  // is_match before the behavior is applied; "remove" after.
};

absl::StatusOr<SplitBehavior> ParseBehavior(const Json& obj, absl::string_view path) {
  OFT_ASSIGN_OR_RETURN(std::string b, RequireString(obj, "behavior", path));
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return Invalid(Key(path, "behavior"),
                 absl::StrCat("unknown behavior \"", b,
                              "\" (expected Removed, Isolated, MergedWithPrevious, "
                              "MergedWithNext or Contiguous)"));
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    for (const auto& step : steps_) step->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> split;
    for (Piece& p : *pieces) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(p.text.begin(), ' ');
      if (regex_ != nullptr) {
        SplitPiece(p, regex_->FindAll(p.text), SplitBehavior::kIsolated, false, &split);
      } else if (!p.text.empty()) {
        split.push_back(std::move(p));
      }
    }
    const auto& table = ByteTable();
    for (Piece& p : split) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char c : p.text) mapped.append(table[c]);
      p.text = std::move(mapped);
    }
    *pieces = std::move(split);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;  // Null when use_regex is false.
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    for (const Piece& p : *pieces) {
      SplitPiece(p, regex_->FindAll(p.text), behavior_, invert_, &out);
    }
    *pieces = std::move(out);
  }

 private:
  std::unique_ptr<Regex> regex_;
  SplitBehavior behavior_;
  bool invert_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    for (Piece& p : *pieces) {
      std::string text;
      text.reserve(p.text.size() + replacement_.size());
      for (char c : p.text) {
        if (c == ' ') {
          text.append(replacement_);
        } else {
          text.push_back(c);
        }
      }
      const bool starts = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && p.at_origin))) {
        text.insert(0, replacement_);
      }
      Piece piece{std::move(text), p.at_origin};
      if (split_) {
        std::vector<Match> matches;
        for (size_t pos = piece.text.find(replacement_); pos != std::string::npos;
             pos = piece.text.find(replacement_, pos + replacement_.size())) {
          matches.emplace_back(pos, pos + replacement_.size());
        }
        SplitPiece(piece, matches, SplitBehavior::kMergedWithNext, false, &out);
      } else if (!piece.text.empty()) {
        out.push_back(std::move(piece));
      }
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

}  // namespace

void SplitPiece(const Piece& piece, const std::vector<Match>& matches, SplitBehavior behavior,
                bool invert, std::vector<Piece>* out) {
  const size_t len = piece.text.size();
  std::vector<Part> parts;
  if (len == 0) {
    parts.push_back({0, 0, false});
  } else {
    size_t prev = 0;
    for (const auto& [start, end] : matches) {
      if (prev != start) parts.push_back({prev, start, false});
      parts.push_back({start, end, true});
      prev = end;
    }
    if (prev != len) parts.push_back({prev, len, false});
  }
  if (invert) {
    for (Part& p : parts) p.flag = !p.flag;
  }
  std::vector<Part> splits;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) splits.push_back({p.start, p.end, false});
      break;
    case SplitBehavior::kRemoved:
      splits = parts;
      break;
    case SplitBehavior::kContiguous: {
      bool previous = false;
      for (const Part& p : parts) {
        if (p.flag == previous && !splits.empty()) {
          splits.back().end = p.end;
        } else {
          splits.push_back({p.start, p.end, false});
        }
        previous = p.flag;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous = false;
      for (const Part& p : parts) {
        if (p.flag && !previous && !splits.empty()) {
          splits.back().end = p.end;
        } else {
          splits.push_back({p.start, p.end, false});
        }
        previous = p.flag;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->flag && !previous && !splits.empty()) {
          splits.back().start = it->start;
        } else {
          splits.push_back({it->start, it->end, false});
        }
        previous = it->flag;
      }
      std::reverse(splits.begin(), splits.end());
      break;
    }
  }
  for (const Part& s : splits) {
    if (s.flag || s.start == s.end) continue;
    out->push_back({piece.text.substr(s.start, s.end - s.start), piece.at_origin && s.start == 0});
  }
}

// The GPT-2 byte-to-unicode table: printable bytes map to themselves, the others to
// U+0100 onwards, so that every byte has a visible, non-space character.
std::array<std::string, 256> BytesToChars() {
  std::array<std::string, 256> table;
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    AppendUtf8(printable ? b : next++, &table[b]);
  }
  return table;
}

const std::array<std::string, 256>& ByteTable() {
  static const auto* table = new std::array<std::string, 256>(BytesToChars());
  return *table;
}

absl::StatusOr<PrependScheme> ParsePrependScheme(const Json& j, const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::optional<std::string> s, OptionalString(j, "prepend_scheme", path));
  OFT_ASSIGN_OR_RETURN(bool add_prefix_space, OptionalBool(j, "add_prefix_space", path, true));
  PrependScheme scheme = PrependScheme::kAlways;
  if (s.has_value()) {
    if (*s == "first") {
      scheme = PrependScheme::kFirst;
    } else if (*s == "never") {
      scheme = PrependScheme::kNever;
    } else if (*s == "always") {
      scheme = PrependScheme::kAlways;
    } else {
      return Invalid(Key(path, "prepend_scheme"),
                     absl::StrCat("unknown value \"", *s, "\" (expected first, never or always)"));
    }
  }
  if (!add_prefix_space) {
    if (scheme != PrependScheme::kAlways && scheme != PrependScheme::kNever) {
      return Invalid(path, "add_prefix_space false contradicts prepend_scheme");
    }
    scheme = PrependScheme::kNever;
  }
  return scheme;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& j,
                                                                const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::string type, RequireString(j, "type", path));
  if (type == "Sequence") {
    OFT_ASSIGN_OR_RETURN(const Json* list, RequireMember(j, "pretokenizers", path));
    if (!list->is_array()) return Invalid(Key(path, "pretokenizers"), "expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      OFT_ASSIGN_OR_RETURN(auto step,
                           ParsePreTokenizer((*list)[i], Index(Key(path, "pretokenizers"), i)));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "ByteLevel") {
    OFT_ASSIGN_OR_RETURN(bool add_prefix_space, OptionalBool(j, "add_prefix_space", path, true));
    OFT_ASSIGN_OR_RETURN(bool use_regex, OptionalBool(j, "use_regex", path, true));
    std::unique_ptr<Regex> regex;
    if (use_regex) {
      OFT_ASSIGN_OR_RETURN(regex, Regex::Create(kGpt2Pattern, false, path));
    }
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(regex));
  }
  if (type == "Split") {
    OFT_ASSIGN_OR_RETURN(auto regex, ParsePattern(j, path));
    OFT_ASSIGN_OR_RETURN(SplitBehavior behavior, ParseBehavior(j, path));
    OFT_ASSIGN_OR_RETURN(bool invert, OptionalBool(j, "invert", path, false));
    return std::make_unique<SplitPreTokenizer>(std::move(regex), behavior, invert);
  }
  if (type == "Metaspace") {
    OFT_ASSIGN_OR_RETURN(std::string replacement, RequireChar(j, "replacement", path));
    OFT_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(j, path));
    OFT_ASSIGN_OR_RETURN(bool split, OptionalBool(j, "split", path, true));
    return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme, split);
  }
  return Unsupported(path, "pre_tokenizer", type, "Sequence, ByteLevel, Split, Metaspace");
}

}  // namespace oft::tokenizer
