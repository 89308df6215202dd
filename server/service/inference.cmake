# oft_inference_service: oft.v1.InferenceService (issue 6), included from
# server/service/CMakeLists.txt. LibTorch-free: oft_serving (which carries LibTorch usage
# requirements) is linked LINK_ONLY; its facade header serving.h includes no LibTorch.
add_library(oft_inference_service STATIC inference_service.cc)
target_include_directories(oft_inference_service PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(oft_inference_service
  PUBLIC oft_proto oft_grpc_status gRPC::grpc++ absl::status absl::statusor absl::strings
         absl::time oft_data $<LINK_ONLY:oft_serving> $<LINK_ONLY:oft_model>
         $<LINK_ONLY:oft_artifacts> $<LINK_ONLY:oft_common>)
