#include "server/service/reflection_resolver.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpcpp/support/status.h"
#include "server/common/echo.h"

namespace oft {
namespace {

namespace pb = google::protobuf;
namespace refl = grpc::reflection::v1;

void SetError(refl::ServerReflectionResponse* response, grpc::StatusCode code, std::string message) {
  refl::ErrorResponse* error = response->mutable_error_response();
  error->set_error_code(static_cast<int32_t>(code));
  error->set_error_message(std::move(message));
}

// `file` and, depth first, every file it imports that `sent` does not hold yet.
void AddFileAndImports(const pb::FileDescriptor* file, std::set<std::string>* sent,
                       refl::FileDescriptorResponse* out) {
  if (!sent->insert(file->name()).second) return;
  pb::FileDescriptorProto proto;
  file->CopyTo(&proto);
  proto.SerializeToString(out->add_file_descriptor_proto());
  for (int i = 0; i < file->dependency_count(); ++i) {
    AddFileAndImports(file->dependency(i), sent, out);
  }
}

void SetFile(refl::ServerReflectionResponse* response, const pb::FileDescriptor* file) {
  std::set<std::string> sent;
  AddFileAndImports(file, &sent, response->mutable_file_descriptor_response());
}

}  // namespace

ReflectionResolver::ReflectionResolver(const pb::DescriptorPool* pool) : pool_(pool) {}

void ReflectionResolver::SetServices(std::vector<std::string> names) {
  absl::MutexLock lock(&mu_);
  services_ = std::move(names);
}

refl::ServerReflectionResponse ReflectionResolver::Answer(
    const refl::ServerReflectionRequest& request) const {
  refl::ServerReflectionResponse response;
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;
  switch (request.message_request_case()) {
    case refl::ServerReflectionRequest::kFileByFilename: {
      const pb::FileDescriptor* file = pool_->FindFileByName(request.file_by_filename());
      if (file == nullptr) {
        SetError(&response, grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("file_by_filename: no file named '", Echo(request.file_by_filename()),
                              "'"));
      } else {
        SetFile(&response, file);
      }
      break;
    }
    case refl::ServerReflectionRequest::kFileContainingSymbol: {
      const pb::FileDescriptor* file =
          pool_->FindFileContainingSymbol(request.file_containing_symbol());
      if (file == nullptr) {
        SetError(&response, grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("file_containing_symbol: no symbol named '",
                              Echo(request.file_containing_symbol()), "'"));
      } else {
        SetFile(&response, file);
      }
      break;
    }
    case refl::ServerReflectionRequest::kFileContainingExtension: {
      const refl::ExtensionRequest& ext = request.file_containing_extension();
      const pb::Descriptor* type = pool_->FindMessageTypeByName(ext.containing_type());
      if (type == nullptr) {
        SetError(&response, grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("file_containing_extension.containing_type: no message type named '",
                              Echo(ext.containing_type()), "'"));
        break;
      }
      const pb::FieldDescriptor* field = pool_->FindExtensionByNumber(type, ext.extension_number());
      if (field == nullptr) {
        SetError(&response, grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("file_containing_extension.extension_number: ", type->full_name(),
                              " has no extension ", ext.extension_number()));
        break;
      }
      SetFile(&response, field->file());
      break;
    }
    case refl::ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const pb::Descriptor* type = pool_->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        SetError(&response, grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("all_extension_numbers_of_type: no message type named '",
                              Echo(request.all_extension_numbers_of_type()), "'"));
        break;
      }
      std::vector<const pb::FieldDescriptor*> extensions;
      pool_->FindAllExtensions(type, &extensions);
      std::vector<int32_t> numbers;
      numbers.reserve(extensions.size());
      for (const pb::FieldDescriptor* f : extensions) numbers.push_back(f->number());
      std::sort(numbers.begin(), numbers.end());
      refl::ExtensionNumberResponse* out = response.mutable_all_extension_numbers_response();
      out->set_base_type_name(type->full_name());
      for (int32_t n : numbers) out->add_extension_number(n);
      break;
    }
    case refl::ServerReflectionRequest::kListServices: {
      refl::ListServiceResponse* out = response.mutable_list_services_response();
      absl::MutexLock lock(&mu_);
      for (const std::string& name : services_) out->add_service()->set_name(name);
      break;
    }
    case refl::ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
      SetError(&response, grpc::StatusCode::INVALID_ARGUMENT,
               "ServerReflectionRequest sets none of file_by_filename, file_containing_symbol, "
               "file_containing_extension, all_extension_numbers_of_type, list_services");
      break;
  }
  return response;
}

}  // namespace oft
