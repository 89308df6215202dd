// Job-level helpers shared by the integration tests: specs, datasets, bounded waits on job
// state, and collecting a job's events.
#ifndef OFT_TESTS_INTEGRATION_JOB_UTIL_H_
#define OFT_TESTS_INTEGRATION_JOB_UTIL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/oft_client.h"

namespace oft::testing {

// API keys used by the tests (keys must be long enough for the server).
inline constexpr char kAliceKey[] = "alice-key-0123456789abcdef";
inline constexpr char kBobKey[] = "bob-key-0123456789abcdef01";
inline std::string AliceFlag() { return std::string("alice:") + kAliceKey; }
inline std::string BobFlag() { return std::string("bob:") + kBobKey; }

// The repository's data/sample/train.jsonl.
std::string SampleTrainPath();
// The first `lines` lines of the sample training data.
std::string SampleTrainHead(int lines);
// Lowercase hex SHA-256.
std::string Sha256Hex(const std::string& data);
std::string ReadFileOrDie(const std::string& path);

// A small, fast job on the default model: batch 2, max_seq_len 64, `max_steps` steps,
// checkpoint_every 0 (only at the end / on cancellation or shutdown).
v1::JobSpec SmallSpec(const std::string& dataset_id, const std::string& adapter_name,
                      int64_t max_steps);

// Polls GetJob until `done(job)` or `timeout`; returns the last job seen.
// DEADLINE_EXCEEDED (with the last state) when `done` never held; RPC errors other than
// UNAVAILABLE (a restarting server, retried until the deadline) pass through.
absl::StatusOr<v1::Job> WaitForJob(Client& client, const std::string& id,
                                   const std::function<bool(const v1::Job&)>& done,
                                   absl::Duration timeout);
// WaitForJob until the job is in `state`; a different terminal state ends the wait early
// (FAILED_PRECONDITION naming both states and the failure message).
absl::StatusOr<v1::Job> WaitForState(Client& client, const std::string& id, v1::Job::State state,
                                     absl::Duration timeout);
// WaitForJob until RUNNING with at least `step` optimizer steps done.
absl::StatusOr<v1::Job> WaitForStep(Client& client, const std::string& id, int64_t step,
                                    absl::Duration timeout);

// Every event of the job after `after` (WatchJob to the terminal event), with a deadline.
absl::StatusOr<std::vector<v1::JobEvent>> CollectEvents(Client& client, const std::string& id,
                                                        int64_t after, absl::Duration timeout);

// Test failure text when event ids are not exactly first..first+n-1 in order; "" if they are.
std::string CheckContiguous(const std::vector<v1::JobEvent>& events, int64_t first = 1);

bool IsTerminal(v1::Job::State s);

}  // namespace oft::testing

#endif  // OFT_TESTS_INTEGRATION_JOB_UTIL_H_
