// NF4 quantization: the code book, the code assignment (ties), nibble order, blockwise
// round trips against hand-computed values, error bounds, padding, double quantization.
#include "server/quant/nf4.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ATen/ATen.h"

namespace oft {
namespace {

// QLoRA / bitsandbytes NF4 levels (the reference constants).
constexpr double kReferenceLevels[16] = {
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0};

// Largest gap between consecutive levels (between -1 and -0.696...).
double HalfLargestGap() {
  double gap = 0;
  for (int i = 0; i < 15; ++i) gap = std::max(gap, kReferenceLevels[i + 1] - kReferenceLevels[i]);
  return gap / 2;
}

Nf4Tensor QuantizeOrDie(const at::Tensor& w, const Nf4Options& options = {}) {
  auto q = Quantize(w, options);
  EXPECT_TRUE(q.ok()) << q.status();
  return *std::move(q);
}

std::vector<uint8_t> Bytes(const at::Tensor& t) {
  const at::Tensor c = t.cpu().contiguous();
  return std::vector<uint8_t>(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
}

std::vector<float> Floats(const at::Tensor& t) {
  const at::Tensor c = t.cpu().to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

TEST(Nf4Codebook, EqualsQloraConstants) {
  ASSERT_EQ(std::size(kNf4Codebook), 16u);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(static_cast<double>(kNf4Codebook[i]), kReferenceLevels[i]) << "level " << i;
  }
  EXPECT_EQ(kNf4Codebook[kNf4ZeroCode], 0.0f);
}

TEST(Nf4Codebook, MidpointsAndTiesGoToTheLowerLevel) {
  const auto& mids = internal::Nf4Midpoints();
  for (int i = 0; i < 15; ++i) {
    EXPECT_EQ(mids[i], static_cast<float>((kReferenceLevels[i] + kReferenceLevels[i + 1]) / 2));
    EXPECT_EQ(internal::Nf4Code(mids[i]), i) << "a value on midpoint " << i << " takes the lower level";
    EXPECT_EQ(internal::Nf4Code(std::nextafter(mids[i], 2.0f)), i + 1);
  }
  for (int i = 0; i < 16; ++i) EXPECT_EQ(internal::Nf4Code(kNf4Codebook[i]), i);
  EXPECT_EQ(internal::Nf4Code(-1.5f), 0);
  EXPECT_EQ(internal::Nf4Code(1.5f), 15);
  // Hand-checked nearest levels.
  EXPECT_EQ(internal::Nf4Code(0.5f), 12);    // 0.4407 (d=.059) beats 0.5626 (d=.063)
  EXPECT_EQ(internal::Nf4Code(-0.25f), 4);   // -0.2844 (d=.034) beats -0.1848 (d=.065)
  EXPECT_EQ(internal::Nf4Code(0.1f), 8);     // 0.0796 (d=.020) beats 0.1609 (d=.061)
  EXPECT_EQ(internal::Nf4Code(-0.9f), 0);    // -1.0 (d=.1) beats -0.6962 (d=.204)
  EXPECT_EQ(internal::Nf4Code(0.0f), 7);
}

TEST(Nf4Quantize, HandComputedSmallRoundTrip) {
  // One block (absmax 1): codes 12, 4, 8, 15, 7, 0, then zero padding (code 7).
  const at::Tensor w = at::tensor({0.5f, -0.25f, 0.1f, 1.0f, 0.0f, -0.9f}).view({2, 3});
  const Nf4Tensor q = QuantizeOrDie(w);
  EXPECT_EQ(q.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(q.num_blocks(), 1);
  std::vector<uint8_t> expected_codes(32, 0x77);
  expected_codes[0] = 0xC4;  // 12 (high nibble = first element), 4
  expected_codes[1] = 0x8F;  // 8, 15
  expected_codes[2] = 0x70;  // 7, 0
  EXPECT_EQ(Bytes(q.codes), expected_codes);
  EXPECT_EQ(Floats(q.absmax), std::vector<float>{1.0f});
  const std::vector<float> expected = {0.44070982933044434f, -0.28444138169288635f,
                                       0.07958029955625534f, 1.0f, 0.0f, -1.0f};
  EXPECT_EQ(Floats(Dequantize(q)), expected);

  // Scaled by 4 (exact in fp32): same codes, absmax 4, values 4 * level.
  const Nf4Tensor q4 = QuantizeOrDie(w * 4);
  EXPECT_EQ(Bytes(q4.codes), expected_codes);
  EXPECT_EQ(Floats(q4.absmax), std::vector<float>{4.0f});
  std::vector<float> expected4;
  for (float v : expected) expected4.push_back(4 * v);
  EXPECT_EQ(Floats(Dequantize(q4)), expected4);
}

TEST(Nf4Quantize, LevelsTimesAbsmaxRoundTripExactlyWithKnownBytes) {
  // Four blocks of 64, each absmax * (levels 0..15 repeated 4 times).
  const float absmaxes[4] = {2.5f, 0.125f, 3.0e-3f, 7.0f};
  std::vector<float> values;
  for (float a : absmaxes) {
    for (int rep = 0; rep < 4; ++rep) {
      for (int i = 0; i < 16; ++i) values.push_back(kNf4Codebook[i] * a);
    }
  }
  const at::Tensor w = at::tensor(values).view({8, 32});
  const Nf4Tensor q = QuantizeOrDie(w);
  ASSERT_EQ(q.codes.numel(), 128);
  const std::vector<uint8_t> bytes = Bytes(q.codes);
  const uint8_t pattern[8] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF};
  for (size_t j = 0; j < bytes.size(); ++j) EXPECT_EQ(bytes[j], pattern[j % 8]) << "byte " << j;
  EXPECT_EQ(Floats(q.absmax), std::vector<float>(std::begin(absmaxes), std::end(absmaxes)));
  EXPECT_EQ(Floats(Dequantize(q)), values);
}

TEST(Nf4Dequantize, NibbleOrderOnKnownBytes) {
  // Hand-built tensor: block size 4, one block, absmax 2.
  Nf4Tensor q;
  q.codes = at::tensor(std::vector<uint8_t>{0xF0, 0x7A}, at::kByte);
  q.absmax = at::tensor({2.0f});
  q.shape = {4};
  q.block_size = 4;
  // 0xF0: first = 15 (1.0), second = 0 (-1.0); 0x7A: first = 7 (0.0), second = 10.
  EXPECT_EQ(Floats(Dequantize(q)),
            (std::vector<float>{2.0f, -2.0f, 0.0f, 2 * 0.24611230194568634f}));
}

TEST(Nf4Quantize, VectorisedCodesMatchTheScalarSpec) {
  at::manual_seed(1);
  // Random values plus every midpoint and level, with absmax fixed at 1 by a +1 entry.
  std::vector<float> values = {1.0f};
  for (float m : internal::Nf4Midpoints()) {
    values.push_back(m);
    values.push_back(std::nextafter(m, 2.0f));
    values.push_back(std::nextafter(m, -2.0f));
  }
  for (float l : kNf4Codebook) values.push_back(l);
  const at::Tensor extra = at::rand({4096 - static_cast<int64_t>(values.size())}) * 2 - 1;
  for (float v : Floats(extra)) values.push_back(v);
  const at::Tensor w = at::tensor(values);
  const Nf4Tensor q = QuantizeOrDie(w, {.block_size = 4096});
  ASSERT_EQ(Floats(q.absmax), std::vector<float>{1.0f});
  const std::vector<uint8_t> bytes = Bytes(q.codes);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint8_t code = (i % 2 == 0) ? bytes[i / 2] >> 4 : bytes[i / 2] & 0x0F;
    ASSERT_EQ(code, internal::Nf4Code(values[i])) << "value " << values[i];
  }
}

// Random weights: every decoded value is absmax * the nearest level of w * (1/absmax),
// and the error is at most half the largest code book gap times the block's absmax.
void CheckRandomRoundTrip(const at::Tensor& w, int64_t block_size) {
  const Nf4Tensor q = QuantizeOrDie(w, {.block_size = block_size});
  const std::vector<float> x = Floats(w);
  const std::vector<float> y = Floats(Dequantize(q, at::kFloat));
  const std::vector<float> absmax = Floats(q.absmax);
  ASSERT_EQ(y.size(), x.size());
  const double bound = HalfLargestGap();
  for (size_t i = 0; i < x.size(); ++i) {
    const float a = absmax[i / block_size];
    const float normalized = x[i] * (1.0f / a);
    int best = 0;
    for (int l = 1; l < 16; ++l) {
      if (std::abs(normalized - kReferenceLevels[l]) < std::abs(normalized - kReferenceLevels[best])) best = l;
    }
    ASSERT_EQ(y[i], kNf4Codebook[best] * a) << "element " << i;
    ASSERT_LE(std::abs(static_cast<double>(x[i]) - y[i]), bound * a * (1 + 1e-6)) << "element " << i;
  }
  // Block absmax is the exact max |w| of the block.
  for (size_t k = 0; k < absmax.size(); ++k) {
    float m = 0;
    for (size_t i = k * block_size; i < std::min(x.size(), (k + 1) * block_size); ++i) {
      m = std::max(m, std::abs(x[i]));
    }
    ASSERT_EQ(absmax[k], m) << "block " << k;
  }
}

TEST(Nf4Quantize, RandomRoundTripErrorIsBounded) {
  at::manual_seed(2);
  CheckRandomRoundTrip(at::randn({37, 123}), 64);          // 4551 values: odd, padded
  CheckRandomRoundTrip(at::randn({16, 64}) * 1e-3, 64);    // small magnitudes
  CheckRandomRoundTrip(at::randn({5, 7}) * 30, 8);         // another block size
}

TEST(Nf4Quantize, PaddingAndOddSizes) {
  at::manual_seed(3);
  for (int64_t numel : {1, 2, 63, 64, 65, 127, 129}) {
    SCOPED_TRACE(numel);
    const at::Tensor w = at::randn({numel}) + 0.5;
    const Nf4Tensor q = QuantizeOrDie(w);
    const int64_t blocks = (numel + 63) / 64;
    EXPECT_EQ(q.num_blocks(), blocks);
    EXPECT_EQ(q.codes.numel(), blocks * 32);
    EXPECT_EQ(q.absmax.numel(), blocks);
    const std::vector<uint8_t> bytes = Bytes(q.codes);
    // Padded positions hold code 7 (level 0.0).
    for (int64_t i = numel; i < blocks * 64; ++i) {
      const uint8_t code = (i % 2 == 0) ? bytes[i / 2] >> 4 : bytes[i / 2] & 0x0F;
      EXPECT_EQ(code, kNf4ZeroCode) << "padded element " << i;
    }
    const at::Tensor y = Dequantize(q);
    EXPECT_EQ(y.sizes(), w.sizes());
    CheckRandomRoundTrip(w, 64);
  }
}

TEST(Nf4Quantize, ZeroBlockDecodesToZeros) {
  at::Tensor w = at::zeros({3, 64});
  w[1].copy_(at::randn({64}));
  const Nf4Tensor q = QuantizeOrDie(w);
  const std::vector<float> absmax = Floats(q.absmax);
  EXPECT_EQ(absmax[0], 0.0f);
  EXPECT_EQ(absmax[2], 0.0f);
  const std::vector<uint8_t> bytes = Bytes(q.codes);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(bytes[j], 0x77);
  const at::Tensor y = Dequantize(q);
  EXPECT_TRUE(at::equal(y[0], at::zeros({64})));
  EXPECT_TRUE(at::equal(y[2], at::zeros({64})));
}

TEST(Nf4Quantize, HalfPrecisionWeightsDecodeToTheirDtype) {
  at::manual_seed(4);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    SCOPED_TRACE(c10::toString(dtype));
    const at::Tensor w = at::randn({33, 70}).to(dtype);
    const Nf4Tensor q = QuantizeOrDie(w);
    EXPECT_EQ(q.dtype, dtype);
    const at::Tensor y = Dequantize(q);
    EXPECT_EQ(y.scalar_type(), dtype);
    // The same fp32 decode, rounded once to the dtype.
    EXPECT_TRUE(at::equal(y, Dequantize(q, at::kFloat).to(dtype)));
    // Quantizing the fp32 upcast gives the same codes.
    const Nf4Tensor q32 = QuantizeOrDie(w.to(at::kFloat));
    EXPECT_TRUE(at::equal(q.codes, q32.codes));
    EXPECT_TRUE(at::equal(Dequantize(q, at::kDouble), Dequantize(q, at::kFloat).to(at::kDouble)));
  }
}

TEST(Nf4DoubleQuant, HandComputedTwoBlocks) {
  // absmax {1, 3}: offset 2, centered {-1, 1}, scale 1/127, codes {-127, 127}.
  at::Tensor w = at::zeros({128});
  w[0] = 1.0f;
  w[64] = -3.0f;
  const Nf4Tensor q = QuantizeOrDie(w, {.double_quant = true});
  EXPECT_EQ(q.absmax.scalar_type(), at::kChar);
  EXPECT_EQ(q.absmax_offset, 2.0f);
  ASSERT_EQ(q.absmax_scale.numel(), 1);
  EXPECT_EQ(Floats(q.absmax_scale)[0], 1.0f / 127.0f);
  const at::Tensor codes = q.absmax.to(at::kInt);
  EXPECT_EQ(codes[0].item<int>(), -127);
  EXPECT_EQ(codes[1].item<int>(), 127);
  const std::vector<float> decoded = Floats(DequantizeAbsmax(q));
  EXPECT_EQ(decoded[0], std::fma(-127.0f, 1.0f / 127.0f, 2.0f));
  EXPECT_EQ(decoded[1], std::fma(127.0f, 1.0f / 127.0f, 2.0f));
  EXPECT_NEAR(decoded[0], 1.0f, 2e-7);
  EXPECT_NEAR(decoded[1], 3.0f, 4e-7);
  const std::vector<float> y = Floats(Dequantize(q));
  EXPECT_EQ(y[0], decoded[0]);
  EXPECT_EQ(y[64], -decoded[1]);
}

TEST(Nf4DoubleQuant, RoundTripErrorIsBounded) {
  at::manual_seed(5);
  // 600 blocks -> 3 groups of 256 (the last one partial); varied scales per row.
  const at::Tensor w = at::randn({300, 128}) * at::rand({300, 1}) * 4;
  const Nf4Tensor plain = QuantizeOrDie(w);
  const Nf4Tensor q = QuantizeOrDie(w, {.double_quant = true});
  ASSERT_EQ(q.absmax_scale.numel(), 3);
  EXPECT_TRUE(at::equal(q.codes, plain.codes));  // the 4-bit codes do not change
  const std::vector<float> exact = Floats(plain.absmax);
  const std::vector<float> decoded = Floats(DequantizeAbsmax(q));
  const std::vector<float> scale = Floats(q.absmax_scale);
  double max_err = 0;
  for (size_t k = 0; k < exact.size(); ++k) {
    const double bound = scale[k / 256] / 2 * (1 + 1e-5) +
                         4 * std::numeric_limits<float>::epsilon() * exact[k];
    const double err = std::abs(static_cast<double>(decoded[k]) - exact[k]);
    ASSERT_LE(err, bound) << "block " << k;
    max_err = std::max(max_err, err);
  }
  EXPECT_GT(max_err, 0);  // the test would notice a no-op
  // Each weight: NF4 error with the decoded absmax, |level| <= 1.
  const std::vector<float> x = Floats(w);
  const std::vector<float> y = Floats(Dequantize(q));
  const std::vector<float> y_plain = Floats(Dequantize(plain));
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t k = i / 64;
    const double dq_bound = scale[k / 256] / 2 * (1 + 1e-5) + 4 * 1.2e-7 * exact[k];
    ASSERT_LE(std::abs(static_cast<double>(y[i]) - y_plain[i]), dq_bound * (1 + 1e-6) + 1e-12);
    ASSERT_LE(std::abs(static_cast<double>(y[i]) - x[i]),
              HalfLargestGap() * exact[k] * (1 + 1e-6) + dq_bound);
  }
}

TEST(Nf4Storage, BytesAndRatioToBf16) {
  const at::Tensor w = at::randn({256, 512}).to(at::kBFloat16);
  const Nf4Tensor q = QuantizeOrDie(w);
  EXPECT_EQ(q.StorageBytes(), 256 * 512 / 2 + (256 * 512 / 64) * 4);  // 65536 + 8192
  const double ratio = static_cast<double>(q.StorageBytes()) / (w.numel() * 2);
  EXPECT_DOUBLE_EQ(ratio, 0.28125);
  const Nf4Tensor dq = QuantizeOrDie(w, {.double_quant = true});
  EXPECT_EQ(dq.StorageBytes(), 65536 + 2048 + 8 * 4 + 4);
  RecordProperty("nf4_over_bf16", std::to_string(ratio));
  RecordProperty("nf4_dq_over_bf16", std::to_string(dq.StorageBytes() / (w.numel() * 2.0)));
}

TEST(Nf4Quantize, RejectsBadInput) {
  EXPECT_EQ(Quantize(at::Tensor()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Quantize(at::zeros({0})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Quantize(at::zeros({4}, at::kInt)).status().code(), absl::StatusCode::kInvalidArgument);
  at::Tensor nan = at::ones({8});
  nan[3] = std::numeric_limits<float>::quiet_NaN();
  auto s = Quantize(nan).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("NaN"), absl::string_view::npos) << s;
  s = Quantize(at::ones({8}), {.block_size = 63}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Nf4Options.block_size"), absl::string_view::npos) << s;
}

TEST(Nf4Dequantize, RejectsMalformedTensors) {
  Nf4Tensor q = QuantizeOrDie(at::ones({128}));
  Nf4Tensor bad = q;
  bad.codes = q.codes.narrow(0, 0, 10);
  EXPECT_THROW(Dequantize(bad), c10::Error);
  bad = q;
  bad.absmax = q.absmax.to(at::kDouble);
  EXPECT_THROW(Dequantize(bad), c10::Error);
  bad = q;
  bad.double_quant = true;  // fp32 absmax, no scale
  EXPECT_THROW(Dequantize(bad), c10::Error);
}

}  // namespace
}  // namespace oft
