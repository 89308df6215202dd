// torchrun's environment -> LaunchEnv, and CompareIdentities: every bad value is refused
// naming its variable; disagreement names the rank and the key.
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/dist/agreement.h"
#include "server/dist/launch_env.h"

namespace oft {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::optional<LaunchEnv>> FromMap(const std::map<std::string, std::string>& m) {
  return LaunchEnvFromEnvironment([&m](const char* name) -> const char* {
    auto it = m.find(name);
    return it == m.end() ? nullptr : it->second.c_str();
  });
}

std::map<std::string, std::string> Good() {
  return {{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
          {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}};
}

TEST(LaunchEnv, NoVariablesMeansOneProcess) {
  auto e = FromMap({{"MASTER_ADDR", "x"}});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_FALSE(e->has_value());
}

TEST(LaunchEnv, ReadsTorchrunVariables) {
  auto m = Good();
  m["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  m["TORCHELASTIC_RESTART_COUNT"] = "3";
  auto e = FromMap(m);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_TRUE(e->has_value());
  const LaunchEnv& l = **e;
  EXPECT_EQ(l.rank, 1);
  EXPECT_EQ(l.world_size, 4);
  EXPECT_EQ(l.local_rank, 1);
  EXPECT_EQ(l.local_world_size, 2);
  EXPECT_EQ(l.master_addr, "10.0.0.1");
  EXPECT_EQ(l.master_port, 29500);
  EXPECT_TRUE(l.use_agent_store);
  EXPECT_EQ(l.restart_count, 3);
  m["TORCHELASTIC_USE_AGENT_STORE"] = "False";
  EXPECT_FALSE((*FromMap(m))->use_agent_store);
}

TEST(LaunchEnv, LocalVariablesDefault) {
  auto m = Good();
  m.erase("LOCAL_RANK");
  m.erase("LOCAL_WORLD_SIZE");
  auto e = FromMap(m);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ((*e)->local_rank, 0);
  EXPECT_EQ((*e)->local_world_size, 1);
}

TEST(LaunchEnv, BadValuesNameTheVariable) {
  const std::vector<std::pair<std::map<std::string, std::string>, std::string>> cases = {
      {{{"RANK", "0"}}, "WORLD_SIZE must be set"},
      {{{"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}, "RANK must be set"},
      {{{"RANK", "2"}, {"WORLD_SIZE", "2"}}, "RANK must be in [0, WORLD_SIZE=2), got 2"},
      {{{"RANK", "x"}, {"WORLD_SIZE", "2"}}, "RANK must be an integer, got \"x\""},
      {{{"RANK", "0"}, {"WORLD_SIZE", "0"}}, "WORLD_SIZE must be in [1, 65536], got 0"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}, "MASTER_ADDR must be set"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}}, "MASTER_PORT must be set"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "70000"}},
       "MASTER_PORT must be in [1, 65535], got 70000"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_WORLD_SIZE", "3"}},
       "LOCAL_WORLD_SIZE must be in [1, WORLD_SIZE=2], got 3"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}},
       "LOCAL_RANK must be in [0, LOCAL_WORLD_SIZE=1), got 1"},
  };
  for (const auto& [env, want] : cases) {
    auto e = FromMap(env);
    ASSERT_FALSE(e.ok()) << want;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(e.status().message(), HasSubstr(want));
  }
  auto m = Good();
  m["TORCHELASTIC_USE_AGENT_STORE"] = "yes";
  EXPECT_THAT(FromMap(m).status().message(),
              HasSubstr("TORCHELASTIC_USE_AGENT_STORE must be \"True\" or \"False\", got \"yes\""));
}

TEST(Agreement, EqualIdentitiesAgree) {
  EXPECT_TRUE(CompareIdentities("x", {"{\"a\":1}", "{\"a\":1}", "{\"a\":1}"}).ok());
  EXPECT_TRUE(CompareIdentities("x", {}).ok());
}

TEST(Agreement, NamesTheRankAndTheKey) {
  absl::Status st = CompareIdentities(
      "the job", {"{\"a\":1,\"world_size\":2}", "{\"a\":1,\"world_size\":2}", "{\"a\":1,\"world_size\":3}"});
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), "ranks disagree on the job: world_size is 3 on rank 2 but 2 on rank 0");
  st = CompareIdentities("the job", {"{\"a\":1}", "{\"a\":1,\"b\":2}"});
  EXPECT_EQ(st.message(), "ranks disagree on the job: b is 2 on rank 1 but missing on rank 0");
  st = CompareIdentities("the job", {"plain", "other"});
  EXPECT_EQ(st.message(), "ranks disagree on the job: rank 1 has other but rank 0 has plain");
}

}  // namespace
}  // namespace oft
