#include "server/service/event_hub.h"

#include <utility>

namespace oft {

uint64_t EventHub::Subscribe(const std::string& job_id, Callback callback) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  subs_.emplace(job_id, std::make_pair(id, std::move(callback)));
  job_of_[id] = job_id;
  return id;
}

void EventHub::Unsubscribe(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto j = job_of_.find(id);
  if (j == job_of_.end()) return;
  auto [begin, end] = subs_.equal_range(j->second);
  for (auto it = begin; it != end; ++it) {
    if (it->second.first == id) {
      subs_.erase(it);
      break;
    }
  }
  job_of_.erase(j);
}

void EventHub::Publish(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto [begin, end] = subs_.equal_range(job_id);
  for (auto it = begin; it != end; ++it) it->second.second();
}

}  // namespace oft
