// A fixed pool of threads that runs submitted closures in FIFO order. gRPC reactions hand
// blocking work (SQLite reads, file I/O, dataset validation) to it so that reactions never
// block gRPC's own threads.
//
// Thread-safe. The destructor stops accepting work, runs what is queued and joins.
#ifndef OFT_SERVER_COMMON_EXECUTOR_H_
#define OFT_SERVER_COMMON_EXECUTOR_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

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

 private:
  void Loop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace oft

#endif  // OFT_SERVER_COMMON_EXECUTOR_H_
