// Child process of JobStoreTest.SurvivesSigkillRightAfterCommit: opens the store, creates
// a job, starts it, appends one event, prints the job id on stdout and SIGKILLs itself
// without closing anything (no destructors, no WAL checkpoint).
//
// Usage: job_store_crash_helper <db_path> <tenant> <idempotency_key>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "server/jobs/job_store.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <db_path> <tenant> <idempotency_key>\n", argv[0]);
    return 2;
  }
  auto store = oft::JobStore::Open(argv[1]);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
    return 1;
  }
  oft::NewJob job;
  job.tenant = argv[2];
  job.idempotency_key = argv[3];
  job.spec_json = R"({"baseModel":"tiny"})";
  auto created = (*store)->CreateJob(job);
  if (!created.ok()) {
    std::fprintf(stderr, "create: %s\n", created.status().ToString().c_str());
    return 1;
  }
  const std::string id = created->job.id;
  auto running = (*store)->Transition(id, oft::JobState::kQueued, oft::JobState::kRunning);
  if (!running.ok()) return 1;
  if (!(*store)->AppendEvent(id, "step", R"({"progress":{"step":"1"}})").ok()) return 1;
  const std::string line = id + "\n";
  if (write(STDOUT_FILENO, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    return 1;
  }
  raise(SIGKILL);
  return 3;  // not reached
}
