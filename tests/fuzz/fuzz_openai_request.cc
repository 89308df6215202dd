// An OpenAI API request body (POST /v1/completions, /v1/chat/completions and
// /v1/fine_tuning/jobs, untrusted bytes from any HTTP client): parse for every endpoint; a
// parsed request must pass the serving limits and produce response objects that serialize;
// a refused one is INVALID_ARGUMENT with an error object that serializes.
#include <cstdint>
#include <string>

#include "server/http/openai_fine_tuning_types.h"
#include "server/http/openai_types.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (oft::OpenAiEndpoint e : {oft::OpenAiEndpoint::kCompletions, oft::OpenAiEndpoint::kChatCompletions}) {
    auto r = oft::ParseOpenAiRequest(e, text);
    if (!r.ok()) {
      if (r.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
      (void)oft::ErrorBody(r.status()).dump();
      continue;
    }
    if (!oft::ValidateGenerateParams(r->params).ok()) std::abort();  // parse implies valid
    if (!oft::ParseModelRef(r->model).ok()) std::abort();
    oft::GenerationOutcome o;
    o.text = r->params.text.value_or("");
    (void)oft::CompletionResponse(*r, "id", 0, o).dump(-1, ' ', false,
                                                        nlohmann::json::error_handler_t::replace);
    const oft::FinishReason f = oft::FinishReason::kStop;
    (void)oft::CompletionChunk(*r, "id", 0, o.text, true, &f).dump(-1, ' ', false,
                                                                    nlohmann::json::error_handler_t::replace);
  }
  auto job = oft::ParseFineTuningJobCreate(text);
  if (!job.ok()) {
    if (job.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    (void)oft::ErrorBody(oft::ToFineTuningError(job.status())).dump(-1, ' ', false,
                                                                     nlohmann::json::error_handler_t::replace);
  } else {
    if (job->spec().base_model().empty() || job->spec().training_dataset_ids_size() != 1) std::abort();
    oft::v1::Job j;
    *j.mutable_spec() = job->spec();
    (void)oft::FineTuningJobObject(j).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return 0;
}
