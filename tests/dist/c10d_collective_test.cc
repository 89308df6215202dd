// ConnectC10d between real processes over loopback (TCPStore + ProcessGroupGloo): sums are
// exact for float, double and int64 tensors up to 1M values (which proves Debian's gloo
// headers agree with the wheel's gloo where ProcessGroupGloo uses them), and a launch or
// identity mismatch or a dead peer ends every rank with a clear error within a bounded time.
#include <signal.h>

#include <chrono>
#include <thread>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/dist/rank_process.h"

namespace oft {
namespace {

using ::testing::HasSubstr;
using namespace oft::testing;
using Clock = std::chrono::steady_clock;

// c10d_peer as ranks 0..n-1, with extra args and env overrides per rank.
std::vector<RankOutcome> RunPeers(int n, const std::vector<std::vector<std::string>>& extra,
                                  const std::vector<std::map<std::string, std::string>>& env_over,
                                  std::chrono::seconds limit) {
  std::vector<std::vector<std::string>> args(n, {OFT_C10D_PEER, "--timeout_ms=8000"});
  for (int r = 0; r < n && r < static_cast<int>(extra.size()); ++r) {
    args[r].insert(args[r].end(), extra[r].begin(), extra[r].end());
  }
  return RunRanks(args, env_over, limit, ::testing::TempDir() + "/rank");
}

TEST(C10dCollective, TwoRanksSumExactlyOverGloo) {
  auto out = RunPeers(2, {}, {}, std::chrono::seconds(120));
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(out[r].status, 0) << "rank " << r << ": " << out[r].out << out[r].err;
    EXPECT_THAT(out[r].out, HasSubstr("\"checked\":9")) << out[r].out;
  }
}

TEST(C10dCollective, AgentStoreClientsMeetAtTheAgentsStore) {
  // TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent hosts the store and every rank, rank 0
  // too, is a client. Here a third process plays the agent; were rank 0 to host the store as
  // well, its port would be taken and it would fail.
  const int port = FreePort();
  RankProcess agent = SpawnRank({OFT_C10D_PEER, "--serve_store_seconds=60"},
                                {{"MASTER_PORT", std::to_string(port)}},
                                ::testing::TempDir() + "/agent");
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (ReadText(agent.stdout_path).find("serving") == std::string::npos && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::vector<RankProcess> ps;
  for (int r = 0; r < 2; ++r) {
    auto env = RankEnv(r, 2, port);
    env["TORCHELASTIC_USE_AGENT_STORE"] = "True";
    env["TORCHELASTIC_RESTART_COUNT"] = "1";
    ps.push_back(SpawnRank({OFT_C10D_PEER, "--timeout_ms=8000"}, env,
                           ::testing::TempDir() + "/agent_rank" + std::to_string(r)));
  }
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(WaitRank(ps[r], Clock::now() + std::chrono::seconds(60)), 0)
        << ReadText(ps[r].stdout_path) << ReadText(ps[r].stderr_path);
    EXPECT_THAT(ReadText(ps[r].stdout_path), HasSubstr("\"checked\":9"));
  }
  kill(agent.pid, SIGKILL);
  WaitRank(agent, Clock::now() + std::chrono::seconds(10));
  EXPECT_THAT(ReadText(agent.stdout_path), HasSubstr("\"saw_ranks\":true"))
      << "the ranks must meet at the agent's store";
}

TEST(C10dCollective, WorldSizeMismatchFailsEveryRankNamingIt) {
  const auto started = Clock::now();
  auto out = RunPeers(2, {}, {{}, {{"WORLD_SIZE", "3"}}}, std::chrono::seconds(60));
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(out[r].status, 1) << out[r].out << out[r].err;
    EXPECT_THAT(out[r].out, HasSubstr("FAILED_PRECONDITION")) << out[r].out;
    EXPECT_THAT(out[r].out, HasSubstr("world_size is")) << out[r].out;
  }
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(30));
}

TEST(C10dCollective, IdentityMismatchFailsEveryRankNamingTheKey) {
  auto out = RunPeers(2, {{"--identity={\"data_sha256\":\"aa\",\"seed\":1}"},
                          {"--identity={\"data_sha256\":\"bb\",\"seed\":1}"}},
                      {}, std::chrono::seconds(60));
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(out[r].status, 1) << out[r].out << out[r].err;
    EXPECT_THAT(out[r].out,
                HasSubstr("ranks disagree on the test identity: data_sha256 is \\\"bb\\\" on rank 1 "
                          "but \\\"aa\\\" on rank 0"))
        << out[r].out;
  }
}

TEST(C10dCollective, DeadPeerEndsTheOtherRankWithinTheTimeout) {
  const auto started = Clock::now();
  auto out = RunPeers(2, {{}, {"--exit_after_connect"}}, {}, std::chrono::seconds(60));
  EXPECT_EQ(out[1].status, 0);
  EXPECT_EQ(out[0].status, 1) << out[0].out << out[0].err;
  EXPECT_THAT(out[0].out, ::testing::AnyOf(HasSubstr("UNAVAILABLE"), HasSubstr("DEADLINE_EXCEEDED")))
      << out[0].out;
  // The timeout is 8 s; rank 0 may wait that long once (agreement or all-reduce).
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(30));
}

}  // namespace
}  // namespace oft
