#include "server/jobs/job_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/file_util.h"
#include "tests/jobs/store_fixture.h"

namespace oft {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

namespace fs = std::filesystem;

using JobStoreTest = ::oft::testing::StoreTest;

// ---- create / get ----

TEST_F(JobStoreTest, CreateWritesQueuedJobAndFirstEvent) {
  auto r = store_->CreateJob(Job("acme", R"({"baseModel":"tiny","priority":3})", "", 3));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->created);
  const JobRecord& j = r->job;
  EXPECT_TRUE(absl::StartsWith(j.id, "job-")) << j.id;
  EXPECT_EQ(j.id.size(), 4u + 24u);
  EXPECT_EQ(j.tenant, "acme");
  EXPECT_EQ(j.state, JobState::kQueued);
  EXPECT_EQ(j.priority, 3);
  EXPECT_EQ(j.queue_position, 1);
  EXPECT_EQ(j.latest_event_id, 1);
  EXPECT_FALSE(j.started_at.has_value());
  EXPECT_EQ(j.progress.eta_seconds, -1.0);

  auto got = store_->GetJob("acme", j.id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->spec_json, R"({"baseModel":"tiny","priority":3})");
  EXPECT_EQ(got->created_at, j.created_at);

  auto events = Events(j.id);
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_EQ(events[0].event_id, 1);
  EXPECT_EQ(events[0].kind, "state_changed");
  EXPECT_THAT(events[0].payload_json, HasSubstr(R"("state":"QUEUED")"));
  // Written through the codec: the first event has no previous state (STATE_UNSPECIFIED).
  EXPECT_EQ(events[0].payload_json,
            EncodeStateChanged(std::nullopt, JobState::kQueued, "job created", std::nullopt)
                .payload_json);
}

TEST_F(JobStoreTest, CreateRejectsBadInputNamingTheField) {
  auto bad_spec = store_->CreateJob(Job("acme", "not json"));
  EXPECT_EQ(bad_spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_spec.status().message(), HasSubstr("spec_json"));

  auto no_tenant = store_->CreateJob(Job(""));
  EXPECT_EQ(no_tenant.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_tenant.status().message(), HasSubstr("tenant"));

  auto bad_priority = store_->CreateJob(Job("acme", "{}", "", 101));
  EXPECT_EQ(bad_priority.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_priority.status().message(), HasSubstr("priority"));

  NewJob missing_ds = Job("acme");
  missing_ds.dataset_ids = {"ds-nope"};
  auto r = store_->CreateJob(missing_ds);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("ds-nope"));
  // Nothing was written by the failed attempts.
  auto page = store_->ListJobs("acme", {}, 0, "");
  ASSERT_TRUE(page.ok());
  EXPECT_THAT(page->jobs, IsEmpty());
}

// ---- idempotency ----

TEST_F(JobStoreTest, IdempotencyKeyReturnsTheSameJob) {
  auto first = store_->CreateJob(Job("acme", R"({"a":1})", "key-1"));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->created);
  // The job moves on; a retry still returns it, in its current state.
  ASSERT_TRUE(store_->Transition(first->job.id, JobState::kQueued, JobState::kRunning).ok());
  auto again = store_->CreateJob(Job("acme", R"({"a":1})", "key-1"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->job.id, first->job.id);
  EXPECT_EQ(again->job.state, JobState::kRunning);
  // No second job and no extra events.
  auto page = store_->ListJobs("acme", {}, 0, "");
  ASSERT_TRUE(page.ok());
  EXPECT_THAT(page->jobs, SizeIs(1));
  EXPECT_THAT(Events(first->job.id), SizeIs(2));
}

TEST_F(JobStoreTest, IdempotencyKeyWithDifferentSpecIsAlreadyExists) {
  auto first = store_->CreateJob(Job("acme", R"({"a":1})", "key-1"));
  ASSERT_TRUE(first.ok());
  auto other = store_->CreateJob(Job("acme", R"({"a":2})", "key-1"));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(other.status().message(), HasSubstr("key-1"));
  EXPECT_THAT(other.status().message(), HasSubstr(first->job.id));
}

TEST_F(JobStoreTest, IdempotencyKeysAreScopedPerTenantAndEmptyKeyMeansNone) {
  auto a = store_->CreateJob(Job("acme", "{}", "same"));
  auto b = store_->CreateJob(Job("globex", "{}", "same"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(b->created);
  EXPECT_NE(a->job.id, b->job.id);
  auto c = store_->CreateJob(Job("acme", "{}", ""));
  auto d = store_->CreateJob(Job("acme", "{}", ""));
  ASSERT_TRUE(c.ok() && d.ok());
  EXPECT_NE(c->job.id, d->job.id);
}

// ---- tenants ----

TEST_F(JobStoreTest, TenantsSeeOnlyTheirOwnJobsAndDatasets) {
  const std::string mine = Create("acme");
  const std::string theirs = Create("globex");

  auto g = store_->GetJob("acme", theirs);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(g.status().message(), HasSubstr(theirs));
  EXPECT_EQ(store_->RequestCancel("acme", theirs).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetJob("globex", theirs)->state, JobState::kQueued);

  auto page = store_->ListJobs("acme", {}, 0, "");
  ASSERT_TRUE(page.ok());
  ASSERT_THAT(page->jobs, SizeIs(1));
  EXPECT_EQ(page->jobs[0].id, mine);

  auto ds = datasets_->CreateDataset(Dataset("globex"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(datasets_->GetDataset("acme", ds->id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(datasets_->DeleteDataset("acme", ds->id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(datasets_->ListDatasets("acme", 0, "")->datasets, IsEmpty());
  // Another tenant's dataset cannot be trained on.
  NewJob j = Job("acme");
  j.dataset_ids = {ds->id};
  EXPECT_EQ(store_->CreateJob(j).status().code(), absl::StatusCode::kNotFound);
  // A token of one tenant does not page another's list.
  for (int i = 0; i < 3; ++i) Create("globex");
  auto theirs_page = store_->ListJobs("globex", {}, 2, "");
  ASSERT_TRUE(theirs_page.ok());
  ASSERT_FALSE(theirs_page->next_page_token.empty());
  EXPECT_EQ(store_->ListJobs("acme", {}, 2, theirs_page->next_page_token).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- paging ----

TEST_F(JobStoreTest, PagingIsCompleteAndStableUnderInserts) {
  std::vector<std::string> created;
  for (int i = 0; i < 25; ++i) created.push_back(Create("acme"));
  // Newest first.
  std::vector<std::string> expected(created.rbegin(), created.rend());

  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = store_->ListJobs("acme", {}, 10, token);
    ASSERT_TRUE(page.ok()) << page.status();
    ++pages;
    for (const JobRecord& j : page->jobs) seen.push_back(j.id);
    token = page->next_page_token;
    // Jobs created while paging never show up in later pages or shift them.
    Create("acme");
    Create("acme");
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), seen.size());
}

TEST_F(JobStoreTest, PagingFiltersByStateAndValidatesArguments) {
  const std::string a = Create("acme");
  const std::string b = Create("acme");
  const std::string c = Create("acme");
  ASSERT_TRUE(store_->Transition(b, JobState::kQueued, JobState::kRunning).ok());
  ASSERT_TRUE(store_->RequestCancel("acme", c).ok());

  auto queued = store_->ListJobs("acme", {JobState::kQueued}, 0, "");
  ASSERT_TRUE(queued.ok());
  ASSERT_THAT(queued->jobs, SizeIs(1));
  EXPECT_EQ(queued->jobs[0].id, a);
  auto active = store_->ListJobs("acme", {JobState::kRunning, JobState::kCancelled}, 1, "");
  ASSERT_TRUE(active.ok());
  ASSERT_THAT(active->jobs, SizeIs(1));
  EXPECT_EQ(active->jobs[0].id, c);
  // The same filter in another order is the same filter.
  auto next = store_->ListJobs("acme", {JobState::kCancelled, JobState::kRunning}, 1,
                               active->next_page_token);
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_THAT(next->jobs, SizeIs(1));
  EXPECT_EQ(next->jobs[0].id, b);
  EXPECT_TRUE(next->next_page_token.empty());

  auto other_filter = store_->ListJobs("acme", {JobState::kQueued}, 1, active->next_page_token);
  EXPECT_EQ(other_filter.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(other_filter.status().message(), HasSubstr("page_token"));
  auto garbage = store_->ListJobs("acme", {}, 1, "not-a-token");
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  auto negative = store_->ListJobs("acme", {}, -1, "");
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(negative.status().message(), HasSubstr("page_size"));
}

// ---- state machine ----

TEST_F(JobStoreTest, TransitionsFollowTheStateMachine) {
  const std::string id = Create("acme");
  auto running = store_->Transition(id, JobState::kQueued, JobState::kRunning);
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_TRUE(running->started_at.has_value());
  EXPECT_EQ(running->queue_position, 0);

  TransitionFields done;
  done.result_adapter_name = "bot";
  done.result_adapter_version = 2;
  auto ok = store_->Transition(id, JobState::kRunning, JobState::kSucceeded, done);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->state, JobState::kSucceeded);
  EXPECT_TRUE(ok->finished_at.has_value());
  EXPECT_EQ(ok->result_adapter_name, "bot");
  EXPECT_EQ(ok->result_adapter_version, 2);
  EXPECT_EQ(ok->progress.eta_seconds, 0.0);

  auto back = store_->Transition(id, JobState::kSucceeded, JobState::kRunning);
  EXPECT_EQ(back.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(back.status().message(), HasSubstr("SUCCEEDED -> RUNNING"));
  EXPECT_THAT(back.status().message(), HasSubstr(id));
  EXPECT_EQ(store_->GetJob("acme", id)->state, JobState::kSucceeded);
}

TEST_F(JobStoreTest, TransitionIsCompareAndSet) {
  const std::string id = Create("acme");
  auto wrong_from = store_->Transition(id, JobState::kRunning, JobState::kSucceeded);
  EXPECT_EQ(wrong_from.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(wrong_from.status().message(), HasSubstr("is QUEUED, not RUNNING"));
  EXPECT_EQ(
      store_->Transition("job-missing", JobState::kQueued, JobState::kRunning).status().code(),
      absl::StatusCode::kNotFound);
  // Two workers race to start the same job: exactly one wins.
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      if (store_->Transition(id, JobState::kQueued, JobState::kRunning).ok()) ++wins;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_THAT(Events(id), SizeIs(2));
}

TEST_F(JobStoreTest, FailureIsRequiredForFailedAndRecorded) {
  const std::string id = Create("acme");
  ASSERT_TRUE(store_->Transition(id, JobState::kQueued, JobState::kRunning).ok());
  auto no_failure = store_->Transition(id, JobState::kRunning, JobState::kFailed);
  EXPECT_EQ(no_failure.status().code(), absl::StatusCode::kInvalidArgument);
  TransitionFields stray;
  stray.failure = JobFailureInfo{"INTERNAL", "x", ""};
  EXPECT_EQ(store_->Transition(id, JobState::kRunning, JobState::kCancelled, stray).status().code(),
            absl::StatusCode::kInvalidArgument);

  TransitionFields f;
  f.failure = JobFailureInfo{"OUT_OF_MEMORY", "batch_size 64 does not fit; try 16",
                             "hyperparameters.batch_size"};
  auto failed = store_->Transition(id, JobState::kRunning, JobState::kFailed, f);
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->failure.reason, "OUT_OF_MEMORY");
  EXPECT_EQ(failed->failure.field, "hyperparameters.batch_size");
  auto events = Events(id);
  ASSERT_THAT(events, SizeIs(3));
  EXPECT_THAT(events.back().payload_json, HasSubstr(R"("reason":"OUT_OF_MEMORY")"));
  // The terminal state change is the last event.
  auto late = store_->AppendEvent(id, "step", "{}");
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(late.status().message(), HasSubstr("FAILED"));
}

TEST_F(JobStoreTest, CancelQueuedRunningAndFinishedJobs) {
  const std::string queued = Create("acme");
  auto c1 = store_->RequestCancel("acme", queued);
  ASSERT_TRUE(c1.ok()) << c1.status();
  EXPECT_EQ(c1->state, JobState::kCancelled);
  // Cancelling again is a no-op.
  auto c1b = store_->RequestCancel("acme", queued);
  ASSERT_TRUE(c1b.ok());
  EXPECT_EQ(c1b->latest_event_id, c1->latest_event_id);

  const std::string running = Create("acme");
  ASSERT_TRUE(store_->Transition(running, JobState::kQueued, JobState::kRunning).ok());
  auto c2 = store_->RequestCancel("acme", running);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->state, JobState::kRunning);
  EXPECT_TRUE(c2->cancel_requested);
  EXPECT_EQ(store_->RequestCancel("acme", running)->latest_event_id, c2->latest_event_id);
  ASSERT_TRUE(store_->Transition(running, JobState::kRunning, JobState::kCancelled).ok());

  const std::string done = Create("acme");
  ASSERT_TRUE(store_->Transition(done, JobState::kQueued, JobState::kRunning).ok());
  ASSERT_TRUE(store_->Transition(done, JobState::kRunning, JobState::kSucceeded).ok());
  auto c3 = store_->RequestCancel("acme", done);
  EXPECT_EQ(c3.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c3.status().message(), HasSubstr("SUCCEEDED"));
}

// ---- queue ----

TEST_F(JobStoreTest, QueueOrdersByPriorityThenCreation) {
  const std::string low = Create("acme", -5);
  const std::string mid1 = Create("globex", 0);
  const std::string high = Create("acme", 10);
  const std::string mid2 = Create("acme", 0);
  const std::string started = Create("acme", 50);
  ASSERT_TRUE(store_->Transition(started, JobState::kQueued, JobState::kRunning).ok());

  auto q = store_->QueuedJobs();
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<std::string> ids;
  std::vector<int64_t> positions;
  for (const JobRecord& j : *q) {
    ids.push_back(j.id);
    positions.push_back(j.queue_position);
  }
  EXPECT_THAT(ids, ElementsAre(high, mid1, mid2, low));
  EXPECT_THAT(positions, ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(store_->GetJob("acme", mid2)->queue_position, 3);
  EXPECT_EQ(store_->GetJob("acme", started)->queue_position, 0);
}

TEST_F(JobStoreTest, ActiveJobQuotaPerTenant) {
  JobStoreOptions o = Options();
  o.max_active_jobs_per_tenant = 2;
  store_.reset();
  auto s = JobStore::Open(path_, o);
  ASSERT_TRUE(s.ok());
  store_ = std::move(*s);
  const std::string a = Create("acme");
  Create("acme");
  auto third = store_->CreateJob(Job("acme"));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("acme"));
  EXPECT_TRUE(store_->CreateJob(Job("globex")).ok());
  ASSERT_TRUE(store_->RequestCancel("acme", a).ok());
  EXPECT_TRUE(store_->CreateJob(Job("acme")).ok());
}

// ---- events ----

TEST_F(JobStoreTest, ConcurrentAppendersGetGapFreeIncreasingIds) {
  const std::string id = Create("acme");
  ASSERT_TRUE(store_->Transition(id, JobState::kQueued, JobState::kRunning).ok());
  absl::Mutex mu;
  std::vector<int64_t> notified;
  store_->SetEventListener([&](const std::string& job, int64_t event_id) {
    absl::MutexLock lock(&mu);
    if (job == id) notified.push_back(event_id);
  });

  constexpr int kThreads = 8;
  constexpr int kPerThread = 40;
  std::vector<std::vector<int64_t>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        JobProgressInfo p;
        p.step = i;
        auto e = store_->AppendEvent(id, "step",
                                     absl::StrCat(R"({"thread":)", t, R"(,"i":)", i, "}"), p);
        ASSERT_TRUE(e.ok()) << e.status();
        got[t].push_back(*e);
      }
    });
  }
  // Readers run concurrently with the writers.
  std::thread reader([&] {
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(store_->EventsAfter(id, 0, 10000).ok());
  });
  for (auto& t : threads) t.join();
  reader.join();

  std::vector<int64_t> all;
  for (const auto& v : got) {
    for (size_t i = 1; i < v.size(); ++i) EXPECT_LT(v[i - 1], v[i]);  // per thread: increasing
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  ASSERT_THAT(all, SizeIs(kThreads * kPerThread));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int64_t>(i) + 3);

  auto events = Events(id);
  ASSERT_THAT(events, SizeIs(2 + kThreads * kPerThread));
  for (size_t i = 0; i < events.size(); ++i)
    EXPECT_EQ(events[i].event_id, static_cast<int64_t>(i) + 1);
  // Each thread's payloads are in its own order in the log.
  std::map<int, int> last_i;
  for (const auto& e : events) {
    if (e.kind != "step") continue;
    int t = 0, i = 0;
    ASSERT_EQ(std::sscanf(e.payload_json.c_str(), R"({"thread":%d,"i":%d})", &t, &i), 2);
    if (last_i.count(t)) {
      EXPECT_EQ(i, last_i[t] + 1);
    }
    last_i[t] = i;
  }
  absl::MutexLock lock(&mu);
  std::vector<int64_t> expected_notified(all.begin(), all.end());
  std::sort(notified.begin(), notified.end());
  EXPECT_EQ(notified, expected_notified);
  EXPECT_EQ(store_->GetJob("acme", id)->latest_event_id, 2 + kThreads * kPerThread);
}

TEST_F(JobStoreTest, EventsAfterReplaysFromAnyPoint) {
  const std::string id = Create("acme");
  ASSERT_TRUE(store_->Transition(id, JobState::kQueued, JobState::kRunning).ok());
  for (int i = 1; i <= 10; ++i) {
    JobProgressInfo p;
    p.step = i;
    p.total_steps = 10;
    p.loss = 1.0 / i;
    ASSERT_TRUE(store_->AppendEvent(id, "step", absl::StrCat(R"({"i":)", i, "}"), p).ok());
  }
  auto job = store_->GetJob("acme", id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->progress.step, 10);
  EXPECT_DOUBLE_EQ(job->progress.loss, 0.1);
  EXPECT_FALSE(job->progress.eval_loss.has_value());

  auto tail = store_->EventsAfter(id, 7, 100);
  ASSERT_TRUE(tail.ok());
  std::vector<int64_t> ids;
  for (const auto& e : *tail) ids.push_back(e.event_id);
  EXPECT_THAT(ids, ElementsAre(8, 9, 10, 11, 12));
  EXPECT_EQ((*tail)[0].payload_json, R"({"i":6})");

  auto limited = store_->EventsAfter(id, 0, 3);
  ASSERT_TRUE(limited.ok());
  ASSERT_THAT(*limited, SizeIs(3));
  EXPECT_EQ(limited->back().event_id, 3);
  EXPECT_THAT(*store_->EventsAfter(id, 12, 10), IsEmpty());

  EXPECT_EQ(store_->EventsAfter("job-nope", 0, 10).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->EventsAfter(id, -1, 10).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->EventsAfter(id, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->AppendEvent(id, "state_changed", "{}").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->AppendEvent(id, "step", "[1]").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->AppendEvent("job-nope", "step", "{}").status().code(),
            absl::StatusCode::kNotFound);
}

// ---- durability and recovery ----

TEST_F(JobStoreTest, EverythingSurvivesReopen) {
  auto created = store_->CreateJob(Job("acme", R"({"x":1})", "k"));
  ASSERT_TRUE(created.ok());
  const std::string id = created->job.id;
  ASSERT_TRUE(store_->Transition(id, JobState::kQueued, JobState::kRunning).ok());
  JobProgressInfo p;
  p.step = 5;
  p.eval_loss = 0.25;
  ASSERT_TRUE(store_->AppendEvent(id, "eval", R"({"evalLoss":0.25})", p).ok());
  auto ds = datasets_->CreateDataset(Dataset("acme"));
  ASSERT_TRUE(ds.ok());
  ASSERT_TRUE(keys_->AddApiKey("sk-0123456789abcdef", "acme").ok());

  Reopen();
  auto job = store_->GetJob("acme", id);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, JobState::kRunning);
  EXPECT_EQ(job->spec_json, R"({"x":1})");
  EXPECT_EQ(job->progress.step, 5);
  EXPECT_EQ(job->progress.eval_loss, 0.25);
  EXPECT_EQ(job->idempotency_key, "k");
  EXPECT_THAT(Events(id), SizeIs(3));
  auto got_ds = datasets_->GetDataset("acme", ds->id);
  ASSERT_TRUE(got_ds.ok());
  EXPECT_EQ(got_ds->sha256, ds->sha256);
  EXPECT_EQ(got_ds->created_at, ds->created_at);
  EXPECT_EQ(*keys_->LookupApiKey("sk-0123456789abcdef"), "acme");
  // Idempotency holds across restarts; event ids continue.
  auto again = store_->CreateJob(Job("acme", R"({"x":1})", "k"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->job.id, id);
  EXPECT_EQ(*store_->AppendEvent(id, "step", "{}"), 4);
}

TEST_F(JobStoreTest, SurvivesSigkillRightAfterCommit) {
  store_.reset();  // the child is the only writer
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    execl(OFT_JOB_STORE_CRASH_HELPER, OFT_JOB_STORE_CRASH_HELPER, path_.c_str(), "acme",
          "crash-key", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::string printed;
  char buf[256];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof(buf))) > 0) printed.append(buf, n);
  close(out[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  ASSERT_EQ(WTERMSIG(status), SIGKILL);
  ASSERT_FALSE(printed.empty());
  const std::string id = printed.substr(0, printed.find('\n'));

  Reopen();
  auto job = store_->GetJob("acme", id);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, JobState::kRunning);
  EXPECT_EQ(job->idempotency_key, "crash-key");
  auto events = Events(id);
  ASSERT_THAT(events, SizeIs(3));
  EXPECT_EQ(events[2].kind, "step");

  // Start-up recovery puts the interrupted job back in the queue, with an event.
  auto report = store_->RecoverAfterRestart();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(report->requeued, ElementsAre(id));
  EXPECT_EQ(store_->GetJob("acme", id)->state, JobState::kQueued);
  events = Events(id, 3);
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_EQ(events[0].event_id, 4);
  EXPECT_THAT(events[0].payload_json, HasSubstr("requeued after restart"));
}

TEST_F(JobStoreTest, RecoverAfterRestartRequeuesRunningAndHonoursCancel) {
  const std::string queued = Create("acme");
  const std::string running = Create("acme");
  const std::string cancelling = Create("acme");
  const std::string done = Create("acme");
  for (const auto& id : {running, cancelling, done}) {
    ASSERT_TRUE(store_->Transition(id, JobState::kQueued, JobState::kRunning).ok());
  }
  ASSERT_TRUE(store_->RequestCancel("acme", cancelling).ok());
  ASSERT_TRUE(store_->Transition(done, JobState::kRunning, JobState::kSucceeded).ok());

  Reopen();
  auto report = store_->RecoverAfterRestart();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(report->requeued, ElementsAre(running));
  EXPECT_THAT(report->cancelled, ElementsAre(cancelling));
  auto r = store_->GetJob("acme", running);
  EXPECT_EQ(r->state, JobState::kQueued);
  EXPECT_EQ(r->queue_position, 2);  // behind the job that was queued all along
  EXPECT_FALSE(r->cancel_requested);
  EXPECT_EQ(store_->GetJob("acme", cancelling)->state, JobState::kCancelled);
  EXPECT_EQ(store_->GetJob("acme", done)->state, JobState::kSucceeded);
  EXPECT_EQ(store_->GetJob("acme", queued)->state, JobState::kQueued);
  EXPECT_THAT(Events(running).back().payload_json, HasSubstr(R"("previousState":"RUNNING")"));
  // A second recovery finds nothing to do.
  auto again = store_->RecoverAfterRestart();
  ASSERT_TRUE(again.ok());
  EXPECT_THAT(again->requeued, IsEmpty());
  EXPECT_THAT(again->cancelled, IsEmpty());
}

TEST_F(JobStoreTest, RejectsADatabaseFromANewerSchema) {
  Close();
  // Pretend a newer server migrated this file.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  const std::string sql =
      absl::StrCat("UPDATE schema_version SET version = ", JobStore::SchemaVersion() + 1);
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);

  auto reopened = JobStore::Open(path_);
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(reopened.status().message(), HasSubstr("schema version"));
}

TEST_F(JobStoreTest, OpenRejectsFilesThatAreNotDatabases) {
  Close();
  const std::string junk = (dir_ / "junk.db").string();
  ASSERT_TRUE(WriteFileAtomic(junk, std::string(8192, 'x')).ok());
  auto s = JobStore::Open(junk);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_EQ(JobStore::Open(":memory:").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oft
