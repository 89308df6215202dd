#include "server/model/tokenizer/normalizers.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/model/tokenizer/regex.h"
#include "server/model/tokenizer/utf8.h"

#ifdef OFT_TOKENIZER_HAVE_ICU
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#endif

namespace oft::tokenizer {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void Normalize(std::string* s) const override {
    for (const auto& step : steps_) step->Normalize(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void Normalize(std::string* s) const override {
    if (!s->empty()) s->insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> regex, std::string content)
      : regex_(std::move(regex)), content_(std::move(content)) {}
  void Normalize(std::string* s) const override { *s = ReplaceAll(*regex_, *s, content_); }

 private:
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

#ifdef OFT_TOKENIZER_HAVE_ICU
// NFC / NFD / NFKC / NFKD through ICU. The UNormalizer2 instances are process-wide,
// immutable and thread-safe.
class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(const UNormalizer2* norm) : norm_(norm) {}
  void Normalize(std::string* s) const override {
    UErrorCode err = U_ZERO_ERROR;
    int32_t len16 = 0;
    u_strFromUTF8(nullptr, 0, &len16, s->data(), static_cast<int32_t>(s->size()), &err);
    err = U_ZERO_ERROR;
    std::u16string src(len16, u'\0');
    u_strFromUTF8(src.data(), len16, &len16, s->data(), static_cast<int32_t>(s->size()), &err);
    if (U_FAILURE(err)) return;
    if (unorm2_isNormalized(norm_, src.data(), len16, &err) || U_FAILURE(err)) return;
    err = U_ZERO_ERROR;
    int32_t dst_len = unorm2_normalize(norm_, src.data(), len16, nullptr, 0, &err);
    err = U_ZERO_ERROR;
    std::u16string dst(dst_len, u'\0');
    unorm2_normalize(norm_, src.data(), len16, dst.data(), dst_len, &err);
    if (U_FAILURE(err)) return;
    int32_t len8 = 0;
    u_strToUTF8(nullptr, 0, &len8, dst.data(), dst_len, &err);
    err = U_ZERO_ERROR;
    std::string out(len8, '\0');
    u_strToUTF8(out.data(), len8, &len8, dst.data(), dst_len, &err);
    if (U_FAILURE(err)) return;
    *s = std::move(out);
  }

 private:
  const UNormalizer2* norm_;
};
#endif

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& j,
                                                            const std::string& path) {
  OFT_ASSIGN_OR_RETURN(std::string type, RequireString(j, "type", path));
  if (type == "Sequence") {
    OFT_ASSIGN_OR_RETURN(const Json* list, RequireMember(j, "normalizers", path));
    if (!list->is_array()) return Invalid(Key(path, "normalizers"), "expected an array");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      OFT_ASSIGN_OR_RETURN(auto step,
                           ParseNormalizer((*list)[i], Index(Key(path, "normalizers"), i)));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") {
    OFT_ASSIGN_OR_RETURN(std::string prepend, RequireString(j, "prepend", path));
    return std::make_unique<PrependNormalizer>(std::move(prepend));
  }
  if (type == "Replace") {
    OFT_ASSIGN_OR_RETURN(auto regex, ParsePattern(j, path));
    OFT_ASSIGN_OR_RETURN(std::string content, RequireString(j, "content", path));
    return std::make_unique<ReplaceNormalizer>(std::move(regex), std::move(content));
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
#ifdef OFT_TOKENIZER_HAVE_ICU
    UErrorCode err = U_ZERO_ERROR;
    const UNormalizer2* norm = type == "NFC"    ? unorm2_getNFCInstance(&err)
                               : type == "NFD"  ? unorm2_getNFDInstance(&err)
                               : type == "NFKC" ? unorm2_getNFKCInstance(&err)
                                                : unorm2_getNFKDInstance(&err);
    if (U_FAILURE(err) || norm == nullptr) {
      return absl::InternalError(
          absl::StrCat("ICU cannot provide the ", type, " normalizer: ", u_errorName(err)));
    }
    return std::make_unique<UnicodeNormalizer>(norm);
#else
    return absl::UnimplementedError(
        absl::StrCat("tokenizer.json: ", Key(path, "type"), " is \"", type,
                     "\": Unicode normalization needs ICU, which this build does not have "
                     "(install libicu-dev and reconfigure)"));
#endif
  }
  return Unsupported(path, "normalizer", type, "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD");
}

}  // namespace oft::tokenizer
