#include "server/service/event_hub.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"

namespace oft {
namespace {

TEST(EventHubTest, PublishesToSubscribersOfThatJobOnly) {
  EventHub hub;
  int a = 0, b = 0;
  const uint64_t sa = hub.Subscribe("job-a", [&] { ++a; });
  const uint64_t sb = hub.Subscribe("job-b", [&] { ++b; });
  hub.Publish("job-a");
  hub.Publish("job-a");
  hub.Publish("job-c");
  EXPECT_EQ(a, 2);
  EXPECT_EQ(b, 0);
  hub.Unsubscribe(sa);
  hub.Publish("job-a");
  EXPECT_EQ(a, 2);
  hub.Unsubscribe(sb);
  hub.Unsubscribe(sb);  // twice is harmless
}

TEST(EventHubTest, UnsubscribeWaitsForARunningCallback) {
  EventHub hub;
  std::atomic<bool> in_callback{false}, release{false}, finished{false};
  const uint64_t id = hub.Subscribe("j", [&] {
    in_callback = true;
    while (!release) std::this_thread::yield();
    finished = true;
  });
  std::thread publisher([&] { hub.Publish("j"); });
  while (!in_callback) std::this_thread::yield();
  std::thread unsubscriber([&] {
    hub.Unsubscribe(id);
    EXPECT_TRUE(finished.load());  // never returns while the callback runs
  });
  release = true;
  publisher.join();
  unsubscriber.join();
}

}  // namespace
}  // namespace oft
