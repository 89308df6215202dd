// grpc.health.v1.Health/Check from integration tests, through a generic stub (the test needs
// no generated health stubs).
#ifndef OFT_TESTS_INTEGRATION_HEALTH_CHECK_H_
#define OFT_TESTS_INTEGRATION_HEALTH_CHECK_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

namespace oft::testing {

// The status of `service` ("" = the whole server): 1 = SERVING, 2 = NOT_SERVING (the field-1
// varint of HealthCheckResponse), -1 = the call failed (e.g. NOT_FOUND for an unknown name).
int HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service = "");

}  // namespace oft::testing

#endif  // OFT_TESTS_INTEGRATION_HEALTH_CHECK_H_
