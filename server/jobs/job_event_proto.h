// Decoding stored job events into the oft.v1.JobEvent messages the API returns (the other
// half of the codec in job_events.h). For the service layer, which compiles protobuf.
#ifndef OFT_SERVER_JOBS_JOB_EVENT_PROTO_H_
#define OFT_SERVER_JOBS_JOB_EVENT_PROTO_H_

#include "absl/status/statusor.h"
#include "oft/v1/jobs.pb.h"
#include "server/jobs/job_events.h"

namespace oft {

// The JobEvent for a stored event: id, job, time and the payload decoded from its proto3
// JSON. DATA_LOSS naming the job, the event id and the kind when the kind is not a payload
// field this binary knows or the payload does not decode: never an event with no payload.
absl::StatusOr<oft::v1::JobEvent> DecodeJobEvent(const EventRecord& record);

}  // namespace oft

#endif  // OFT_SERVER_JOBS_JOB_EVENT_PROTO_H_
