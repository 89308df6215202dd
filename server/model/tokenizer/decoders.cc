#include "server/model/tokenizer/decoders.h"

#include <cstdint>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/model/tokenizer/pre_tokenizers.h"
#include "server/model/tokenizer/regex.h"
#include "server/model/tokenizer/utf8.h"

namespace oft::tokenizer {
namespace {

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

class ByteLevelDecoder : public Decoder {
 public:
  ByteLevelDecoder() {
    const auto& table = ByteTable();
    for (int b = 0; b < 256; ++b) char_to_byte_[DecodeUtf8(table[b], 0)] = static_cast<char>(b);
  }
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& t : *tokens) {
      const size_t mark = bytes.size();
      bool all = true;
      for (size_t i = 0; i < t.size() && all; i += Utf8SeqLen(t[i])) {
        auto it = char_to_byte_.find(DecodeUtf8(t, i));
        if (it == char_to_byte_.end()) {
          all = false;
        } else {
          bytes.push_back(it->second);
        }
      }
      // A token with a character outside the byte table (an added token, say) is kept as is.
      if (!all) {
        bytes.resize(mark);
        bytes.append(t);
      }
    }
    tokens->assign(1, Utf8Lossy(bytes));
  }

 private:
  absl::flat_hash_map<uint32_t, char> char_to_byte_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Regex> regex, std::string content)
      : regex_(std::move(regex)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) t = ReplaceAll(*regex_, t, content_);
  }

 private:
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    const auto flush = [&] {
      if (pending.empty()) return;
      if (IsValidUtf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& t : *tokens) {
      int byte = ParseByteToken(t);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  // "<0xAB>" -> 0xAB; anything else -> -1.
  static int ParseByteToken(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    const auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int hi = hex(t[3]), lo = hex(t[4]);
    if (lo < 0) return -1;
    if (t[3] == '+') return lo;  // Rust's u8::from_str_radix accepts a leading '+'.
    if (hi < 0) return -1;
    return hi * 16 + lo;
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    tokens->assign(1, absl::StrJoin(*tokens, ""));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(uint32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      std::vector<size_t> offsets;  // Byte offset of each character, then the end.
      for (size_t i = 0; i < t.size(); i += Utf8SeqLen(t[i])) offsets.push_back(i);
      const size_t n = offsets.size();
      offsets.push_back(t.size());
      size_t begin = 0;
      while (begin < start_ && begin < n && DecodeUtf8(t, offsets[begin]) == content_) ++begin;
      size_t end = n;
      for (size_t k = 0; k < stop_ && end > begin; ++k) {
        if (DecodeUtf8(t, offsets[end - 1]) != content_) break;
        --end;
      }
      t = t.substr(offsets[begin], offsets[end] - offsets[begin]);
    }
  }

 private:
  uint32_t content_;
  size_t start_;
  size_t stop_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme)
      : replacement_(std::move(replacement)), scheme_(scheme) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& t = (*tokens)[i];
      const bool drop = i == 0 && scheme_ != PrependScheme::kNever;
      std::string out;
      for (size_t k = 0; k < t.size();) {
        if (t.compare(k, replacement_.size(), replacement_) == 0) {
          if (!drop) out.push_back(' ');
          k += replacement_.size();
        } else {
          const size_t n = Utf8SeqLen(t[k]);
          out.append(t, k, n);
          k += n;
        }
      }
      t = std::move(out);
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const Json& j, const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::string type, RequireString(j, "type", path));
  if (type == "Sequence") {
    OFT_ASSIGN_OR_RETURN(const Json* list, RequireMember(j, "decoders", path));
    if (!list->is_array()) return Invalid(Key(path, "decoders"), "expected an array");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      OFT_ASSIGN_OR_RETURN(auto step, ParseDecoder((*list)[i], Index(Key(path, "decoders"), i)));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    OFT_ASSIGN_OR_RETURN(auto regex, ParsePattern(j, path));
    OFT_ASSIGN_OR_RETURN(std::string content, RequireString(j, "content", path));
    return std::make_unique<ReplaceDecoder>(std::move(regex), std::move(content));
  }
  if (type == "Strip") {
    OFT_ASSIGN_OR_RETURN(std::string content, RequireChar(j, "content", path));
    OFT_ASSIGN_OR_RETURN(size_t start, OptionalCount(j, "start", path, 0));
    OFT_ASSIGN_OR_RETURN(size_t stop, OptionalCount(j, "stop", path, 0));
    return std::make_unique<StripDecoder>(DecodeUtf8(content, 0), start, stop);
  }
  if (type == "Metaspace") {
    OFT_ASSIGN_OR_RETURN(std::string replacement, RequireChar(j, "replacement", path));
    OFT_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(j, path));
    return std::make_unique<MetaspaceDecoder>(std::move(replacement), scheme);
  }
  return Unsupported(path, "decoder", type,
                     "Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace");
}

}  // namespace oft::tokenizer
