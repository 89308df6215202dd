// WatchJob against a JobServiceImpl on a real in-process gRPC server: a slow reader of a long
// log gets every event exactly once, in order, without the job having to produce more
// events (the reactor stops reading the log at its buffer cap and must resume by itself).
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "oft/v1/jobs.grpc.pb.h"
#include "server/common/executor.h"
#include "server/jobs/api_key_store.h"
#include "server/jobs/job_store.h"
#include "server/jobs/store_db.h"
#include "server/service/auth.h"
#include "server/service/event_hub.h"
#include "server/service/job_service.h"
#include "server/service/model_catalog.h"
#include "server/service/service_env.h"

namespace oft {
namespace {

// The database goes to tmpfs when there is one: the test appends 1,500 fsynced events.
std::string MakeTempDir() {
  std::string base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : ::testing::TempDir();
  std::string pattern = base + "/oft-watch-XXXXXX";
  char* dir = mkdtemp(pattern.data());
  return dir == nullptr ? "" : std::string(dir);
}

TEST(WatchJobTest, SlowReaderOfALongLogGetsEveryEventOnceWithoutNewEvents) {
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  auto db = OpenStoreDb(dir + "/jobs.db");
  ASSERT_TRUE(db.ok()) << db.status();
  auto store = JobStore::Create(*db, JobStoreOptions());
  ASSERT_TRUE(store.ok()) << store.status();
  ApiKeyStore keys(*db);
  auto catalog = ModelCatalog::Create({{"default", std::string(OFT_SOURCE_DIR) + "/models/default"}});
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  Authenticator auth(&keys, AuthOptions{.allow_unauthenticated = true});
  Executor executor(4);
  EventHub hub;
  (*store)->SetEventListener([&hub](const std::string& job, int64_t) { hub.Publish(job); });
  ServiceEnv env;
  env.store = store->get();
  env.models = &*catalog;
  env.auth = &auth;
  env.executor = &executor;
  env.events = &hub;
  env.data_dir = dir;
  JobServiceImpl service(&env);

  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);

  auto job = (*store)->CreateJob(NewJob{.tenant = "default", .idempotency_key = "",
                                        .spec_json = "{}", .priority = 0, .dataset_ids = {}});
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string id = job->job.id;
  ASSERT_TRUE((*store)->Transition(id, JobState::kQueued, JobState::kRunning).ok());
  constexpr int kEvents = 1500;
  for (int i = 0; i < kEvents; ++i) {
    ASSERT_TRUE((*store)->AppendEvent(id, "warning", "{\"code\":\"X\",\"message\":\"m\"}").ok());
  }
  const int64_t last_before_end = (*store)->GetJob("default", id)->latest_event_id;

  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                     grpc::InsecureChannelCredentials());
  auto stub = oft::v1::JobService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  oft::v1::WatchJobRequest req;
  req.set_id(id);
  auto reader = stub->WatchJob(&ctx, req);

  std::vector<int64_t> ids;
  absl::Notification saw_whole_log;
  std::thread consumer([&] {
    oft::v1::JobEvent e;
    while (reader->Read(&e)) {
      ids.push_back(e.event_id());
      // Slow at first, so the server's buffer fills past its cap while it reads the log.
      if (ids.size() <= 40) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (e.event_id() == last_before_end) saw_whole_log.Notify();
    }
  });
  // The whole log must arrive while the job is silent; only then does it finish.
  const bool complete = saw_whole_log.WaitForNotificationWithTimeout(absl::Seconds(30));
  EXPECT_TRUE(complete) << "stalled after " << ids.size() << " of " << last_before_end
                        << " events";
  ASSERT_TRUE((*store)->Transition(id, JobState::kRunning, JobState::kSucceeded).ok());
  consumer.join();
  grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(static_cast<int64_t>(ids.size()), last_before_end + 1);
  for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(ids[i], static_cast<int64_t>(i + 1));

  server->Shutdown();
  executor.Shutdown();
  (*store)->SetEventListener(nullptr);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace oft
