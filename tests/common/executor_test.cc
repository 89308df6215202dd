#include "server/common/executor.h"

#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace oft {
namespace {

TEST(Executor, OldestQueuedWaitGrowsWhileWorkWaitsAndResetsWhenDrained) {
  Executor executor(1);
  EXPECT_EQ(executor.OldestQueuedWait(), absl::ZeroDuration());
  absl::Notification release, started, ran;
  ASSERT_TRUE(executor.Schedule([&] {
    started.Notify();
    release.WaitForNotification();
  }));
  started.WaitForNotification();
  EXPECT_EQ(executor.OldestQueuedWait(), absl::ZeroDuration());  // running is not waiting
  ASSERT_TRUE(executor.Schedule([&] { ran.Notify(); }));
  absl::SleepFor(absl::Milliseconds(60));
  EXPECT_GE(executor.OldestQueuedWait(), absl::Milliseconds(50));
  release.Notify();
  ran.WaitForNotification();
  EXPECT_EQ(executor.OldestQueuedWait(), absl::ZeroDuration());
  executor.Shutdown();
  EXPECT_FALSE(executor.Schedule([] {}));
}

}  // namespace
}  // namespace oft
