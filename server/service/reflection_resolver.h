// Answers gRPC server-reflection questions (grpc.reflection.v1) from a protobuf descriptor pool.
//
// The logic behind ReflectionV1Service (reflection_v1_service.h), apart from any stream: one
// ServerReflectionRequest in, its ServerReflectionResponse out. Questions about files, symbols
// and extensions are answered from `pool` (in the server: the generated pool, which holds every
// .proto compiled into the binary); list_services from the names given to SetServices.
//
// Answers (response.message_response):
//   file_by_filename, file_containing_symbol, file_containing_extension
//       -> file_descriptor_response: the file's FileDescriptorProto first, then every file it
//          imports, directly or not, each once (a response is self-contained).
//   all_extension_numbers_of_type -> all_extension_numbers_response (numbers ascending).
//   list_services -> list_services_response (SetServices order).
//   an unknown file, symbol, type or extension number -> error_response NOT_FOUND, naming
//       the field and the value (cut to kMaxEchoChars, server/common/echo.h);
//   a request with no question set -> error_response INVALID_ARGUMENT.
// valid_host echoes request.host; original_request is the request.
//
// Thread-safe: Answer and SetServices may be called from any threads at once.
#ifndef OFT_SERVER_SERVICE_REFLECTION_RESOLVER_H_
#define OFT_SERVER_SERVICE_REFLECTION_RESOLVER_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/descriptor.h"
#include "grpc/reflection/v1/reflection.pb.h"

namespace oft {

class ReflectionResolver {
 public:
  // `pool` is not owned and must outlive this object.
  explicit ReflectionResolver(const google::protobuf::DescriptorPool* pool);

  ReflectionResolver(const ReflectionResolver&) = delete;
  ReflectionResolver& operator=(const ReflectionResolver&) = delete;

  // The fully-qualified names list_services answers with (replaces the previous list).
  void SetServices(std::vector<std::string> names) ABSL_LOCKS_EXCLUDED(mu_);

  // The answer to one request; never fails as a call: errors are error_response answers.
  grpc::reflection::v1::ServerReflectionResponse Answer(
      const grpc::reflection::v1::ServerReflectionRequest& request) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const google::protobuf::DescriptorPool* pool_;
  mutable absl::Mutex mu_;
  std::vector<std::string> services_ ABSL_GUARDED_BY(mu_);
};

}  // namespace oft

#endif  // OFT_SERVER_SERVICE_REFLECTION_RESOLVER_H_
