#include "server/oft/config.h"

#include <gtest/gtest.h>

namespace oft {
namespace {

TEST(OftConfig, DefaultIsValid) { EXPECT_TRUE(OftConfig{}.Validate().ok()); }

struct BadCase {
  const char* name;
  OftConfig config;
  const char* message;
};

TEST(OftConfig, InvalidConfigsNameTheField) {
  auto with = [](auto f) {
    OftConfig c;
    f(c);
    return c;
  };
  const BadCase cases[] = {
      {"both zero", with([](OftConfig& c) { c.oft_block_size = 0; }),
       "exactly one of r and oft_block_size must be non-zero, got r=0 oft_block_size=0"},
      {"both set", with([](OftConfig& c) { c.r = 4; }),
       "exactly one of r and oft_block_size must be non-zero, got r=4 oft_block_size=32"},
      {"negative r", with([](OftConfig& c) { c.r = -1; c.oft_block_size = 0; }),
       "r must be >= 0, got -1"},
      {"block too big", with([](OftConfig& c) { c.oft_block_size = 4096; }),
       "oft_block_size must be in [0, 1024], got 4096"},
      {"block 1", with([](OftConfig& c) { c.oft_block_size = 1; }), "oft_block_size must be >= 2"},
      {"terms 0", with([](OftConfig& c) { c.num_cayley_neumann_terms = 0; }),
       "num_cayley_neumann_terms must be in [1, 32], got 0"},
      {"terms 99", with([](OftConfig& c) { c.num_cayley_neumann_terms = 99; }),
       "num_cayley_neumann_terms must be in [1, 32], got 99"},
      {"eps 0", with([](OftConfig& c) { c.eps = 0; }), "eps must be a finite number > 0, got 0"},
      {"dropout 1", with([](OftConfig& c) { c.module_dropout = 1.0; }),
       "module_dropout must be in [0, 1), got 1"},
      {"dropout negative", with([](OftConfig& c) { c.module_dropout = -0.1; }),
       "module_dropout must be in [0, 1), got -0.1"},
  };
  for (const auto& bc : cases) {
    auto s = bc.config.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bc.name;
    EXPECT_NE(s.message().find(bc.message), std::string::npos)
        << bc.name << ": got \"" << s.message() << "\"";
  }
  EXPECT_EQ(ParseOftBias("some").status().message(),
            "bias must be one of \"none\", \"all\", \"oft_only\", got \"some\"");
}

// Brute-force restatement of PEFT's adjust_oft_parameters, to compare over many inputs.
int64_t NearestDivisor(int64_t d, int64_t p) {
  if (p >= d) return d;
  int64_t best = -1;
  for (int64_t c = 1; c <= d; ++c) {
    if (d % c) continue;
    if (c <= p) {
      if (best < 0 || c > best) best = c;  // largest divisor <= p
    }
  }
  int64_t hi = p;
  while (d % hi) ++hi;
  return (p - best) <= (hi - p) ? best : hi;
}

TEST(OftConfig, DivisorAdjustmentMatchesPeftRule) {
  EXPECT_EQ(AdjustToDivisor(4096, 32), 32);
  EXPECT_EQ(AdjustToDivisor(100, 32), 25);    // 25 (dist 7) vs 50 (dist 18)
  EXPECT_EQ(AdjustToDivisor(96, 40), 32);     // 32 (8) vs 48 (8): tie -> lower
  EXPECT_EQ(AdjustToDivisor(11008, 30), 32);  // 11008 = 2^8 * 43
  EXPECT_EQ(AdjustToDivisor(7, 3), 1);        // prime: 1 (2) vs 7 (4)
  EXPECT_EQ(AdjustToDivisor(64, 100), 64);
  for (int64_t d = 2; d <= 300; ++d) {
    for (int64_t p = 1; p <= d + 3; ++p) ASSERT_EQ(AdjustToDivisor(d, p), NearestDivisor(d, p)) << d << " " << p;
  }
}

TEST(OftConfig, ResolveBlocks) {
  OftConfig c;  // b = 32
  auto l = ResolveBlocks(c, 4096);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->num_blocks, 128);
  EXPECT_EQ(l->block_size, 32);
  EXPECT_EQ(l->packed_size, 496);
  EXPECT_EQ(l->param_rows, 128);
  EXPECT_FALSE(l->adjusted);

  l = ResolveBlocks(c, 11008);  // Llama-2 down_proj
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->num_blocks, 344);

  l = ResolveBlocks(c, 100);
  ASSERT_TRUE(l.ok());
  EXPECT_TRUE(l->adjusted);
  EXPECT_EQ(l->block_size, 25);
  EXPECT_EQ(l->num_blocks, 4);

  OftConfig by_r;
  by_r.r = 3;
  by_r.oft_block_size = 0;
  by_r.block_share = true;
  l = ResolveBlocks(by_r, 100);  // r=3 -> 4 (dist 1) vs 2 (dist 1): tie -> lower = 2
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->num_blocks, 2);
  EXPECT_EQ(l->block_size, 50);
  EXPECT_EQ(l->param_rows, 1);

  OftConfig too_many;
  too_many.r = 7;
  too_many.oft_block_size = 0;
  auto bad = ResolveBlocks(too_many, 7);  // one feature per block: no rotation possible
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("resolves to 1"), std::string::npos);
}

}  // namespace
}  // namespace oft
