#include "server/service/event_hub.h"

#include <atomic>
#include <chrono>
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
  std::atomic<bool> unsubscribing{false}, unsubscribed{false};
  const uint64_t id = hub.Subscribe("j", [&] {
    in_callback = true;
    while (!release) std::this_thread::yield();
    finished = true;
  });
  std::thread publisher([&] { hub.Publish("j"); });
  while (!in_callback) std::this_thread::yield();
  // The callback is held; Unsubscribe is called while it runs (not after it was released,
  // which would pass without waiting for anything).
  bool finished_when_returned = false;
  std::thread unsubscriber([&] {
    unsubscribing = true;
    hub.Unsubscribe(id);
    finished_when_returned = finished.load();
    unsubscribed = true;
  });
  while (!unsubscribing) std::this_thread::yield();
  // An Unsubscribe that does not wait returns within microseconds; 200 ms is ample. A
  // correct one cannot return here at all, so this never fails a correct hub.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(unsubscribed.load()) << "Unsubscribe returned while the callback was running";
  release = true;
  publisher.join();
  unsubscriber.join();
  EXPECT_TRUE(finished_when_returned);
  // And it is never called again.
  in_callback = false;
  hub.Publish("j");
  EXPECT_FALSE(in_callback.load());
}

}  // namespace
}  // namespace oft
