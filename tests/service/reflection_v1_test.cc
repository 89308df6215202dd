// grpc.reflection.v1: ReflectionResolver on a pool built here (files, symbols, extensions,
// imports, errors), then ReflectionV1Service over a real stream through AddReflectionV1.
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "server/common/echo.h"
#include "server/service/reflection_resolver.h"
#include "server/service/reflection_v1_service.h"

namespace oft {
namespace {

namespace pb = google::protobuf;
namespace refl = grpc::reflection::v1;

// base.proto <- ext.proto <- top.proto, and top.proto imports base.proto directly too.
constexpr const char* kFiles[] = {
    R"pb(name: "t/base.proto" package: "t" syntax: "proto2"
         message_type { name: "Base" extension_range { start: 100 end: 200 } }
         message_type { name: "Plain" })pb",
    R"pb(name: "t/ext.proto" package: "t" syntax: "proto2" dependency: "t/base.proto"
         extension { name: "b" number: 150 label: LABEL_OPTIONAL type: TYPE_INT32 extendee: ".t.Base" }
         extension { name: "a" number: 100 label: LABEL_OPTIONAL type: TYPE_INT32 extendee: ".t.Base" })pb",
    R"pb(name: "t/top.proto" package: "t" syntax: "proto2"
         dependency: "t/base.proto" dependency: "t/ext.proto"
         message_type { name: "Top" field { name: "base" number: 1 label: LABEL_OPTIONAL
                                            type: TYPE_MESSAGE type_name: ".t.Base" } }
         service { name: "TopService" method { name: "Get" input_type: ".t.Top" output_type: ".t.Top" } })pb",
};

class ReflectionResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* text : kFiles) {
      pb::FileDescriptorProto file;
      ASSERT_TRUE(pb::TextFormat::ParseFromString(text, &file)) << text;
      ASSERT_NE(pool_.BuildFile(file), nullptr) << file.name();
    }
  }

  // The file names of a file_descriptor_response, in order.
  static std::vector<std::string> FileNames(const refl::ServerReflectionResponse& r) {
    EXPECT_TRUE(r.has_file_descriptor_response()) << r.DebugString();
    std::vector<std::string> names;
    for (const std::string& raw : r.file_descriptor_response().file_descriptor_proto()) {
      pb::FileDescriptorProto file;
      EXPECT_TRUE(file.ParseFromString(raw));
      names.push_back(file.name());
    }
    return names;
  }

  pb::DescriptorPool pool_;
  ReflectionResolver resolver_{&pool_};
};

refl::ServerReflectionRequest Symbol(const std::string& name) {
  refl::ServerReflectionRequest r;
  r.set_file_containing_symbol(name);
  return r;
}

TEST_F(ReflectionResolverTest, FileByNameSendsTheFileThenEachImportOnce) {
  refl::ServerReflectionRequest req;
  req.set_host("h");
  req.set_file_by_filename("t/top.proto");
  refl::ServerReflectionResponse r = resolver_.Answer(req);
  EXPECT_EQ(r.valid_host(), "h");
  EXPECT_EQ(r.original_request().file_by_filename(), "t/top.proto");
  EXPECT_EQ(FileNames(r), (std::vector<std::string>{"t/top.proto", "t/base.proto", "t/ext.proto"}));
  // The bytes are the pool's own descriptor: the service and its method survive.
  pb::FileDescriptorProto top;
  ASSERT_TRUE(top.ParseFromString(r.file_descriptor_response().file_descriptor_proto(0)));
  ASSERT_EQ(top.service_size(), 1);
  EXPECT_EQ(top.service(0).method(0).name(), "Get");
}

TEST_F(ReflectionResolverTest, SymbolsOfEveryKindFindTheirFile) {
  for (const char* name : {"t.Top", "t.TopService", "t.TopService.Get", "t.Top.base"}) {
    EXPECT_EQ(FileNames(resolver_.Answer(Symbol(name)))[0], "t/top.proto") << name;
  }
  EXPECT_EQ(FileNames(resolver_.Answer(Symbol("t.Plain"))), std::vector<std::string>{"t/base.proto"});
  EXPECT_EQ(FileNames(resolver_.Answer(Symbol("t.b")))[0], "t/ext.proto");
}

TEST_F(ReflectionResolverTest, Extensions) {
  refl::ServerReflectionRequest req;
  req.mutable_file_containing_extension()->set_containing_type("t.Base");
  req.mutable_file_containing_extension()->set_extension_number(150);
  EXPECT_EQ(FileNames(resolver_.Answer(req)), (std::vector<std::string>{"t/ext.proto", "t/base.proto"}));

  req.mutable_file_containing_extension()->set_extension_number(151);
  refl::ServerReflectionResponse r = resolver_.Answer(req);
  EXPECT_EQ(r.error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(r.error_response().error_message(),
            "file_containing_extension.extension_number: t.Base has no extension 151");

  req.mutable_file_containing_extension()->set_containing_type("t.Nope");
  r = resolver_.Answer(req);
  EXPECT_EQ(r.error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(r.error_response().error_message(),
            "file_containing_extension.containing_type: no message type named 't.Nope'");

  refl::ServerReflectionRequest all;
  all.set_all_extension_numbers_of_type("t.Base");
  r = resolver_.Answer(all);
  EXPECT_EQ(r.all_extension_numbers_response().base_type_name(), "t.Base");
  EXPECT_EQ(std::vector<int>(r.all_extension_numbers_response().extension_number().begin(),
                             r.all_extension_numbers_response().extension_number().end()),
            (std::vector<int>{100, 150}));
  all.set_all_extension_numbers_of_type("t.Plain");
  r = resolver_.Answer(all);
  ASSERT_TRUE(r.has_all_extension_numbers_response());
  EXPECT_EQ(r.all_extension_numbers_response().extension_number_size(), 0);
  all.set_all_extension_numbers_of_type("t.TopService");  // a symbol, but not a message type
  EXPECT_EQ(resolver_.Answer(all).error_response().error_code(),
            static_cast<int>(grpc::StatusCode::NOT_FOUND));
}

TEST_F(ReflectionResolverTest, UnknownNamesAreNotFoundAndQuotedBoundedly) {
  refl::ServerReflectionRequest req;
  req.set_file_by_filename("t/missing.proto");
  refl::ServerReflectionResponse r = resolver_.Answer(req);
  EXPECT_EQ(r.error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(r.error_response().error_message(), "file_by_filename: no file named 't/missing.proto'");

  std::string huge(20000, 'x');
  r = resolver_.Answer(Symbol(huge));
  EXPECT_EQ(r.error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(r.error_response().error_message(),
            "file_containing_symbol: no symbol named '" + Echo(huge) + "'");
  EXPECT_LT(r.error_response().error_message().size(), 200u);
}

TEST_F(ReflectionResolverTest, EmptyRequestIsInvalidArgumentAndServicesAreTheGivenList) {
  refl::ServerReflectionResponse r = resolver_.Answer(refl::ServerReflectionRequest());
  EXPECT_EQ(r.error_response().error_code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));

  refl::ServerReflectionRequest list;
  list.set_list_services("*");
  EXPECT_EQ(resolver_.Answer(list).list_services_response().service_size(), 0);
  resolver_.SetServices({"t.TopService", "x.Other"});
  r = resolver_.Answer(list);
  ASSERT_EQ(r.list_services_response().service_size(), 2);
  EXPECT_EQ(r.list_services_response().service(0).name(), "t.TopService");
  EXPECT_EQ(r.list_services_response().service(1).name(), "x.Other");
}

// The real thing: a server built with AddReflectionV1 (and gRPC's health service), asked
// several questions on one stream through the generated v1 stub.
TEST(ReflectionV1ServiceTest, AnswersEachRequestInOrderOnOneStream) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  std::unique_ptr<ReflectionV1Service> service = AddReflectionV1(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  std::unique_ptr<refl::ServerReflection::Stub> stub = refl::ServerReflection::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto stream = stub->ServerReflectionInfo(&ctx);

  std::vector<refl::ServerReflectionRequest> requests(4);
  requests[0].set_list_services("");
  requests[1].set_file_containing_symbol("grpc.reflection.v1.ServerReflection.ServerReflectionInfo");
  requests[2].set_file_by_filename("no/such.proto");
  requests[3].set_file_by_filename("google/protobuf/descriptor.proto");
  for (const auto& req : requests) ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->WritesDone());
  std::vector<refl::ServerReflectionResponse> responses;
  refl::ServerReflectionResponse r;
  while (stream->Read(&r)) responses.push_back(r);
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(responses.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(responses[i].original_request().SerializeAsString(), requests[i].SerializeAsString()) << i;
  }

  std::set<std::string> services;
  for (const auto& s : responses[0].list_services_response().service()) services.insert(s.name());
  EXPECT_EQ(services, (std::set<std::string>{"grpc.reflection.v1.ServerReflection", "grpc.health.v1.Health"}));

  ASSERT_GE(responses[1].file_descriptor_response().file_descriptor_proto_size(), 1);
  pb::FileDescriptorProto file;
  ASSERT_TRUE(file.ParseFromString(responses[1].file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(file.name(), "grpc/reflection/v1/reflection.proto");
  EXPECT_EQ(file.package(), "grpc.reflection.v1");

  EXPECT_EQ(responses[2].error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  ASSERT_EQ(responses[3].file_descriptor_response().file_descriptor_proto_size(), 1);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace
}  // namespace oft
