// Fan-out of "job X has new events" from the JobStore's single event listener to every
// WatchJob stream following X. Callbacks run on the publishing thread and must only
// schedule work (never block). Thread-safe.
#ifndef OFT_SERVER_SERVICE_EVENT_HUB_H_
#define OFT_SERVER_SERVICE_EVENT_HUB_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace oft {

class EventHub {
 public:
  using Callback = std::function<void()>;

  // Calls `callback` after each later Publish(job_id) until Unsubscribe(id) returns.
  uint64_t Subscribe(const std::string& job_id, Callback callback) ABSL_LOCKS_EXCLUDED(mu_);
  // After it returns the callback is not running and is never called again.
  void Unsubscribe(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  void Publish(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;  // held while callbacks run, so Unsubscribe waits for a running one
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::multimap<std::string, std::pair<uint64_t, Callback>> subs_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::string> job_of_ ABSL_GUARDED_BY(mu_);
};

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_EVENT_HUB_H_
