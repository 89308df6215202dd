// A fixed pool of threads that runs submitted closures in FIFO order. gRPC reactions hand
// blocking work (SQLite reads, file I/O, dataset validation) to it so that reactions never
// block gRPC's own threads.
//
// Thread-safe. The destructor stops accepting work, runs what is queued and joins.
// OldestQueuedWait() tells how long the oldest closure not yet started has waited: the
// server's health check turns NOT_SERVING while it stays above a threshold (saturated).
#ifndef OFT_SERVER_COMMON_EXECUTOR_H_
#define OFT_SERVER_COMMON_EXECUTOR_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace oft {

class Executor {
 public:
  // Starts `threads` (>= 1) workers.
  explicit Executor(int threads);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `fn`. After Shutdown() began, `fn` is dropped (returns false).
  bool Schedule(std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs the queued closures, then joins the workers. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  // How long the oldest queued (not yet started) closure has waited; zero when none waits.
  absl::Duration OldestQueuedWait() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop();

  absl::Mutex mu_;
  struct Task {
    std::function<void()> fn;
    absl::Time queued;
  };
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace oft

#endif  // OFT_SERVER_COMMON_EXECUTOR_H_
