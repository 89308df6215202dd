#include "tests/integration/job_util.h"

#include <openssl/evp.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/server_process.h"

namespace oft::testing {

std::string SampleTrainPath() { return SourceDir() + "/data/sample/train.jsonl"; }

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string SampleTrainHead(int lines) {
  std::istringstream in(ReadFileOrDie(SampleTrainPath()));
  std::string line, out;
  for (int i = 0; i < lines && std::getline(in, line); ++i) absl::StrAppend(&out, line, "\n");
  return out;
}

std::string Sha256Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex += kHex[md[i] >> 4];
    hex += kHex[md[i] & 15];
  }
  return hex;
}

v1::JobSpec SmallSpec(const std::string& dataset_id, const std::string& adapter_name,
                      int64_t max_steps) {
  v1::JobSpec spec;
  spec.set_base_model("default");
  spec.add_training_dataset_ids(dataset_id);
  spec.set_output_adapter_name(adapter_name);
  v1::Hyperparameters* h = spec.mutable_hyperparameters();
  h->set_batch_size(2);
  h->set_max_seq_len(64);
  h->set_max_steps(max_steps);
  h->set_learning_rate(1e-3);
  h->set_checkpoint_every(0);
  return spec;
}

bool IsTerminal(v1::Job::State s) {
  return s == v1::Job::SUCCEEDED || s == v1::Job::FAILED || s == v1::Job::CANCELLED;
}

absl::StatusOr<v1::Job> WaitForJob(Client& client, const std::string& id,
                                   const std::function<bool(const v1::Job&)>& done,
                                   absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    absl::StatusOr<v1::Job> job = client.GetJob(id);
    if (!job.ok()) {
      // A server that is (re)starting: keep polling until the deadline.
      if (!absl::IsUnavailable(job.status()) || absl::Now() >= deadline) return job.status();
      absl::SleepFor(absl::Milliseconds(50));
      continue;
    }
    if (done(*job)) return job;
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("job ", id, " did not reach the expected condition within ",
                       absl::FormatDuration(timeout), "; last: ", v1::Job::State_Name(job->state()),
                       " step ", job->progress().step(), " failure: ", job->failure().message()));
    }
    absl::SleepFor(absl::Milliseconds(25));
  }
}

absl::StatusOr<v1::Job> WaitForState(Client& client, const std::string& id, v1::Job::State state,
                                     absl::Duration timeout) {
  absl::StatusOr<v1::Job> job = WaitForJob(
      client, id, [&](const v1::Job& j) { return j.state() == state || IsTerminal(j.state()); },
      timeout);
  if (job.ok() && job->state() != state) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " reached ", v1::Job::State_Name(job->state()), " instead of ",
                     v1::Job::State_Name(state), ": ", job->failure().message()));
  }
  return job;
}

absl::StatusOr<v1::Job> WaitForStep(Client& client, const std::string& id, int64_t step,
                                    absl::Duration timeout) {
  absl::StatusOr<v1::Job> job = WaitForJob(
      client, id,
      [&](const v1::Job& j) {
        return (j.state() == v1::Job::RUNNING && j.progress().step() >= step) ||
               IsTerminal(j.state());
      },
      timeout);
  if (job.ok() && job->state() != v1::Job::RUNNING) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", id, " ended (", v1::Job::State_Name(job->state()), ") before step ", step));
  }
  return job;
}

absl::StatusOr<std::vector<v1::JobEvent>> CollectEvents(Client& client, const std::string& id,
                                                        int64_t after, absl::Duration timeout) {
  std::vector<v1::JobEvent> events;
  WatchOptions options;
  options.deadline = timeout;
  absl::Status st = client.WatchJob(
      id, after,
      [&](const v1::JobEvent& e) {
        events.push_back(e);
        return true;
      },
      options);
  if (!st.ok()) return st;
  return events;
}

std::string CheckContiguous(const std::vector<v1::JobEvent>& events, int64_t first) {
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].event_id() != first + static_cast<int64_t>(i)) {
      return absl::StrCat("event #", i, " has id ", events[i].event_id(), ", expected ",
                          first + static_cast<int64_t>(i));
    }
  }
  return "";
}

}  // namespace oft::testing
