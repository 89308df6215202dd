#include "server/model/safetensors.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ATen/ops/arange.h"
#include "ATen/ops/randn.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/model/safetensors_torch.h"

namespace oft {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

std::string MakeTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string tmpl = absl::StrCat(base != nullptr ? base : "/tmp", "/oft_st_XXXXXX");
  char* dir = ::mkdtemp(tmpl.data());
  EXPECT_NE(dir, nullptr);
  return tmpl;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string LengthPrefix(uint64_t n) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &n, 8);
  return s;
}

// 8-byte length + header + `data_bytes` zero bytes.
std::string FileBytes(const std::string& header, size_t data_bytes) {
  return LengthPrefix(header.size()) + header + std::string(data_bytes, '\0');
}

std::string RawBytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> SampleTensors() {
  at::manual_seed(7);
  return {
      {"w.f32", at::randn({3, 5})},
      {"w.bf16", at::randn({4, 6}).to(at::kBFloat16)},
      {"w.f16", at::randn({2, 3, 2}).to(at::kHalf)},
      {"ids.i64", at::arange(-5, 7, at::kLong).mul(1234567890123LL)},
      {"x.f64", at::randn({3}, at::kDouble)},
      {"x.i32", at::arange(-3, 3, at::kInt)},
      {"x.i16", at::arange(-3, 3, at::kShort)},
      {"x.i8", at::arange(-3, 3, at::kChar)},
      {"x.u8", at::arange(0, 250, 50, at::kByte)},
      {"x.bool", at::arange(0, 6, at::kLong).remainder(2).eq(0)},
      {"scalar", at::randn({})},
      {"empty", at::randn({0, 4})},
  };
}

TEST(Safetensors, RoundTripIsBitwise) {
  const std::string dir = MakeTempDir();
  const std::string path = dir + "/t.safetensors";
  auto tensors = SampleTensors();
  tensors.push_back({"transposed", at::randn({4, 3}).t()});  // non-contiguous input
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}}).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->names().size(), tensors.size());
  EXPECT_EQ((*file)->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  for (const auto& [name, expected] : tensors) {
    SCOPED_TRACE(name);
    auto info = (*file)->Info(name);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ((*info)->shape, std::vector<int64_t>(expected.sizes().begin(), expected.sizes().end()));
    for (bool copy : {true, false}) {
      auto t = (*file)->Tensor(name, copy);
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ(t->scalar_type(), expected.scalar_type());
      EXPECT_EQ(t->sizes(), expected.sizes());
      EXPECT_EQ(RawBytes(*t), RawBytes(expected));
    }
  }
  // The data follows the sorted names; the header is sorted and padded to 8 bytes.
  std::vector<std::string> sorted;
  for (const auto& [n, t] : tensors) sorted.push_back(n);
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ((*file)->names(), sorted);
  const std::string bytes = ReadAll(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"t.safetensors"});  // no temp file left
}

TEST(Safetensors, ZeroCopyTensorOutlivesFile) {
  const std::string path = MakeTempDir() + "/t.safetensors";
  at::Tensor w = at::randn({64, 32});
  ASSERT_TRUE(WriteSafetensors(path, {{"w", w}}).ok());
  at::Tensor alias;
  {
    auto file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    auto t = (*file)->Tensor("w", /*copy=*/false);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->data_ptr(), static_cast<const void*>((*file)->data()));  // aliases the mapping
    alias = *t;
  }
  ASSERT_EQ(::unlink(path.c_str()), 0);
  EXPECT_EQ(RawBytes(alias), RawBytes(w));  // still mapped
}

TEST(Safetensors, MetadataRoundTripAndAbsence) {
  const std::string dir = MakeTempDir();
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"k", "v \xc3\xa9"}, {"e", ""}};
  ASSERT_TRUE(WriteSafetensors(dir + "/a.safetensors", {{"x", at::randn({2})}}, meta).ok());
  auto a = SafetensorsFile::Open(dir + "/a.safetensors");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->metadata(), meta);

  ASSERT_TRUE(WriteSafetensors(dir + "/b.safetensors", {{"x", at::randn({2})}}, {}).ok());
  EXPECT_THAT(ReadAll(dir + "/b.safetensors"), ::testing::Not(HasSubstr("__metadata__")));
  auto b = SafetensorsFile::Open(dir + "/b.safetensors");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE((*b)->metadata().empty());

  // No tensors at all is a valid file.
  ASSERT_TRUE(WriteSafetensors(dir + "/c.safetensors", {}, {{"format", "pt"}}).ok());
  auto c = SafetensorsFile::Open(dir + "/c.safetensors");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->names().empty());
}

TEST(Safetensors, WriteOverwritesAtomically) {
  const std::string dir = MakeTempDir();
  const std::string path = dir + "/t.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"x", at::randn({2})}}).ok());
  at::Tensor y = at::randn({3});
  ASSERT_TRUE(WriteSafetensors(path, {{"y", y}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->names(), std::vector<std::string>{"y"});
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"t.safetensors"});

  // A failed write leaves the old file intact and no temp file behind.
  EXPECT_FALSE(WriteSafetensors(path, {{"a", y}, {"a", y}}).ok());
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"t.safetensors"});
  auto again = SafetensorsFile::Open(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->names(), std::vector<std::string>{"y"});
}

TEST(Safetensors, WriteRejectsBadInput) {
  const std::string dir = MakeTempDir();
  const std::string path = dir + "/t.safetensors";
  at::Tensor x = at::randn({2});
  struct Case {
    const char* what;
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    absl::StatusCode code;
    const char* message;
  };
  const Case cases[] = {
      {"duplicate", {{"a", x}, {"b", x}, {"a", x}}, absl::StatusCode::kInvalidArgument,
       "duplicate tensor name 'a'"},
      {"empty name", {{"", x}}, absl::StatusCode::kInvalidArgument, "name must not be empty"},
      {"reserved", {{"__metadata__", x}}, absl::StatusCode::kInvalidArgument, "reserved"},
      {"complex", {{"c", x.to(at::kComplexFloat)}}, absl::StatusCode::kInvalidArgument,
       "tensor 'c': dtype ComplexFloat cannot be stored"},
      {"undefined", {{"u", at::Tensor()}}, absl::StatusCode::kInvalidArgument, "undefined"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    absl::Status s = WriteSafetensors(path, c.tensors);
    EXPECT_EQ(s.code(), c.code) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.message));
  }
  absl::Status s = WriteSafetensors(dir + "/no/such/dir/t.safetensors", {{"x", x}});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_TRUE(ListDir(dir).empty());
}

struct BadFile {
  const char* what;
  std::string bytes;
  const char* message;
};

TEST(Safetensors, BadFilesGiveClearErrors) {
  const std::string dir = MakeTempDir();
  auto entry = [](const char* name, const char* dtype, const char* shape, const char* offsets) {
    return absl::StrCat("\"", name, "\":{\"dtype\":\"", dtype, "\",\"shape\":", shape,
                        ",\"data_offsets\":", offsets, "}");
  };
  // The JSON header object holding `entries` (built with StrCat: GCC 12 misreports
  // "literal" + std::string as an overlapping memcpy, -Wrestrict).
  auto header = [](std::initializer_list<std::string> entries) {
    return absl::StrCat("{", absl::StrJoin(entries, ","), "}");
  };
  std::string deep(40, '[');
  const std::vector<BadFile> cases = {
      {"tiny file", "abc", "too short for the 8-byte header length"},
      {"header past end", LengthPrefix(1000) + "{}", "header length 1000 is past the end"},
      {"zero header", LengthPrefix(0) + "{}", "header length is 0"},
      {"huge header", LengthPrefix(uint64_t{1} << 40) + "{}", "exceeds the limit"},
      {"not json", FileBytes("{\"a\": nope", 0), "header is not valid JSON"},
      {"not object", FileBytes("[1, 2]", 0), "header must be a JSON object, got array"},
      {"deep nesting", FileBytes(deep, 0), "nests deeper"},
      {"unknown dtype", FileBytes(header({entry("t", "C64", "[1]", "[0,8]")}), 8),
       "tensor 't': unsupported dtype 'C64'"},
      {"fp8 dtype", FileBytes(header({entry("t8", "F8_E4M3", "[1]", "[0,1]")}), 1),
       "tensor 't8': unsupported dtype 'F8_E4M3'"},
      {"negative dim", FileBytes(header({entry("neg", "F32", "[2,-2]", "[0,0]")}), 0),
       "tensor 'neg': shape[1] must be >= 0, got -2"},
      {"float dim", FileBytes(header({entry("fl", "F32", "[2.5]", "[0,10]")}), 10),
       "tensor 'fl': shape[0] must be a non-negative integer"},
      {"offsets out of bounds", FileBytes(header({entry("oob", "F32", "[4]", "[0,16]")}), 8),
       "tensor 'oob': data_offsets end 16 is past the data region of 8 bytes"},
      {"begin > end", FileBytes(header({entry("rev", "F32", "[1]", "[8,4]")}), 8),
       "tensor 'rev': data_offsets begin 8 > end 4"},
      {"length mismatch", FileBytes(header({entry("len", "F32", "[2,3]", "[0,20]")}), 20),
       "tensor 'len': data_offsets span 20 bytes but shape [2, 3] of F32 needs 24"},
      {"overlap",
       FileBytes(header({entry("a", "F32", "[2]", "[0,8]"), entry("b", "F32", "[2]", "[4,12]")}),
                 12),
       "tensor 'b': bytes [4, 12) overlap tensor 'a'"},
      {"hole",
       FileBytes(header({entry("a", "F32", "[1]", "[0,4]"), entry("b", "F32", "[1]", "[8,12]")}),
                 12),
       "tensor 'b': starts at byte 8 leaving a hole [4, 8)"},
      {"trailing bytes", FileBytes(header({entry("a", "F32", "[1]", "[0,4]")}), 9),
       "tensors cover 4 of the 9 data bytes"},
      {"shape overflow",
       FileBytes(header({entry("big", "F32", "[4294967296,4294967296]", "[0,4]")}), 4),
       "tensor 'big': shape [4294967296, 4294967296] has more elements than fit in int64"},
      {"byte overflow", FileBytes(header({entry("bb", "F64", "[4611686018427387904]", "[0,8]")}), 8),
       "tensor 'bb': shape [4611686018427387904] of F64 overflows the byte count"},
      {"missing offsets", FileBytes("{\"m\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4),
       "tensor 'm': missing \"data_offsets\""},
      {"offsets not pair", FileBytes(header({entry("p", "F32", "[1]", "[0,4,8]")}), 4),
       "tensor 'p': \"data_offsets\" must be an array [begin, end]"},
      {"entry not object", FileBytes("{\"s\":5}", 0), "tensor 's': entry must be an object"},
      {"metadata not object", FileBytes("{\"__metadata__\":[1]}", 0),
       "__metadata__ must be an object"},
      {"metadata value", FileBytes("{\"__metadata__\":{\"format\":1}}", 0),
       "__metadata__ value for 'format' must be a string"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    SCOPED_TRACE(c.what);
    const std::string path = absl::StrCat(dir, "/bad", i, ".safetensors");
    WriteBytes(path, c.bytes);
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
    EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
    EXPECT_THAT(std::string(file.status().message()), HasSubstr(c.message));
  }
}

TEST(Safetensors, BadBoolBytesAreRejectedOnRead) {
  const std::string path = MakeTempDir() + "/b.safetensors";
  WriteBytes(path, FileBytes("{\"flags\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]}}", 0) +
                       std::string("\x01\x07", 2));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = (*file)->Tensor("flags");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("BOOL element 1 has byte value 7"));
}

TEST(Safetensors, MissingPathsAndNames) {
  const std::string dir = MakeTempDir();
  auto missing = SafetensorsFile::Open(dir + "/nope.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.safetensors"));
  auto is_dir = SafetensorsFile::Open(dir);
  EXPECT_EQ(is_dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(is_dir.status().message()), HasSubstr("not a regular file"));

  ASSERT_TRUE(WriteSafetensors(dir + "/t.safetensors", {{"x", at::randn({2})}}).ok());
  auto file = SafetensorsFile::Open(dir + "/t.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_FALSE((*file)->Has("y"));
  EXPECT_EQ((*file)->Info("y").status().code(), absl::StatusCode::kNotFound);
  auto t = (*file)->Tensor("y");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("no tensor 'y'"));
}

// Random corruptions of a valid file must come back as a Status (or a valid file whose
// tensors can all be read), never a crash or an out-of-bounds read (run under ASan too).
TEST(Safetensors, FuzzedFilesNeverCrash) {
  const std::string dir = MakeTempDir();
  const std::string good_path = dir + "/good.safetensors";
  ASSERT_TRUE(WriteSafetensors(good_path, SampleTensors(), {{"format", "pt"}}).ok());
  const std::string good = ReadAll(good_path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, good.data(), 8);

  std::mt19937_64 rng(20240601);
  const std::string path = dir + "/fuzz.safetensors";
  int opened = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::string bytes = good;
    switch (iter % 4) {
      case 0:  // flip bytes in the header (where the structure is)
        for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k) {
          bytes[8 + rng() % header_len] = static_cast<char>(rng());
        }
        break;
      case 1:  // truncate anywhere
        bytes.resize(rng() % bytes.size());
        break;
      case 2:  // flip any byte, including the length prefix and data
        bytes[rng() % bytes.size()] ^= static_cast<char>(1 + rng() % 255);
        break;
      case 3: {  // replace a digit in the header with another digit
        size_t pos = 8 + rng() % header_len;
        for (size_t k = 0; k < header_len; ++k, pos = 8 + (pos - 8 + 1) % header_len) {
          if (bytes[pos] >= '0' && bytes[pos] <= '9') {
            bytes[pos] = static_cast<char>('0' + rng() % 10);
            break;
          }
        }
        break;
      }
    }
    WriteBytes(path, bytes);
    auto file = SafetensorsFile::Open(path);
    if (!file.ok()) {
      EXPECT_FALSE(file.status().message().empty());
      continue;
    }
    ++opened;
    for (const auto& name : (*file)->names()) {
      for (bool copy : {true, false}) {
        auto t = (*file)->Tensor(name, copy);
        if (t.ok()) (void)RawBytes(*t);
      }
    }
  }
  EXPECT_GT(opened, 0);  // data-byte flips leave the file valid
}

// ---- Interop with the Python `safetensors` library (see make_safetensors_fixtures.py) ----

std::string FixturesDir() {
  const char* d = std::getenv("OFT_MODEL_FIXTURES");
  return d == nullptr ? "" : d;
}

std::string Hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

TEST(SafetensorsInterop, ReadsPythonFileAndWritesOneForPython) {
  const std::string root = FixturesDir();
  if (root.empty()) GTEST_SKIP() << "run through ctest test safetensors_interop (needs fixtures)";
  const json expected = json::parse(ReadAll(root + "/py/dtypes.json"));
  auto file = SafetensorsFile::Open(root + "/py/dtypes.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();

  std::map<std::string, std::string> meta;
  for (const auto& [k, v] : expected["metadata"].items()) meta[k] = v.get<std::string>();
  EXPECT_EQ((*file)->metadata(), meta);
  ASSERT_EQ((*file)->names().size(), expected["tensors"].size());

  std::vector<std::pair<std::string, at::Tensor>> all;
  for (const auto& [name, rec] : expected["tensors"].items()) {
    SCOPED_TRACE(name);
    auto info = (*file)->Info(name);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(SafetensorsDtypeName((*info)->dtype), rec["dtype"].get<std::string>());
    EXPECT_EQ((*info)->shape, rec["shape"].get<std::vector<int64_t>>());
    for (bool copy : {true, false}) {
      auto t = (*file)->Tensor(name, copy);
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ(Hex(RawBytes(*t)), rec["bytes_hex"].get<std::string>());
      if (rec.contains("values")) {
        at::Tensor flat = t->reshape({-1});
        if (t->is_floating_point()) {
          at::Tensor d = flat.to(at::kDouble).contiguous();
          auto values = rec["values"].get<std::vector<double>>();
          ASSERT_EQ(values.size(), static_cast<size_t>(d.numel()));
          for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(d.data_ptr<double>()[i], values[i]);
        } else {
          at::Tensor l = flat.to(at::kLong).contiguous();
          auto values = rec["values"].get<std::vector<int64_t>>();
          ASSERT_EQ(values.size(), static_cast<size_t>(l.numel()));
          for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(l.data_ptr<int64_t>()[i], values[i]);
        }
      }
    }
    auto t = (*file)->Tensor(name);
    ASSERT_TRUE(t.ok());
    all.push_back({name, *t});
  }
  // What we write from the same tensors must load identically in Python ("check" step).
  ::mkdir((root + "/cpp").c_str(), 0755);
  absl::Status s = WriteSafetensors(root + "/cpp/roundtrip.safetensors", all, meta);
  ASSERT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace oft
