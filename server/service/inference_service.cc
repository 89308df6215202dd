#include "server/service/inference_service.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "absl/synchronization/mutex.h"
#include "server/common/grpc_status.h"
#include "server/serving/serving.h"

namespace oft {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kPrefix[] = "/oft.v1.InferenceService/";

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void SetTime(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t nanos = absl::ToUnixNanos(t);
  out->set_seconds(nanos / 1000000000);
  out->set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

void ToProto(const AdapterId& id, oft::v1::AdapterVersionRef* out) {
  out->set_name(id.name);
  out->set_version(id.version);
}

void ToProto(const LoadedAdapterInfo& i, oft::v1::LoadedAdapter* out) {
  ToProto(i.id, out->mutable_ref());
  out->set_base_model(i.base_model);
  out->set_memory_bytes(i.memory_bytes);
  out->set_active_requests(i.active_requests);
  for (const auto& a : i.aliases) out->add_aliases(a);
  SetTime(i.load_time, out->mutable_load_time());
  if (i.last_used_time) SetTime(*i.last_used_time, out->mutable_last_used_time());
}

void ToProto(const AliasInfo& a, oft::v1::Alias* out) {
  out->set_alias(a.alias);
  ToProto(a.target, out->mutable_target());
  if (a.previous_target) ToProto(*a.previous_target, out->mutable_previous_target());
  SetTime(a.update_time, out->mutable_update_time());
}

absl::Status RequireRef(const oft::v1::AdapterVersionRef& ref, bool positive_version) {
  if (ref.name().empty()) return absl::InvalidArgumentError("ref.name is required");
  if (positive_version ? ref.version() <= 0 : ref.version() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("ref.version must be ",
                                                   positive_version ? "> 0" : ">= 0", ", got ",
                                                   ref.version()));
  }
  return absl::OkStatus();
}

oft::v1::GenerateResponse::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kEos:
      return oft::v1::GenerateResponse::FINISH_REASON_EOS;
    case FinishReason::kStop:
      return oft::v1::GenerateResponse::FINISH_REASON_STOP;
    case FinishReason::kContext:
      return oft::v1::GenerateResponse::FINISH_REASON_CONTEXT;
    case FinishReason::kLength:
    default:
      return oft::v1::GenerateResponse::FINISH_REASON_LENGTH;
  }
}

absl::StatusOr<GenerateParams> ParamsFromProto(const oft::v1::GenerateRequest& r) {
  GenerateParams p;
  p.base_model = r.base_model();
  switch (r.adapter_case()) {
    case oft::v1::GenerateRequest::kAdapterRef:
      if (r.adapter_ref().name().empty()) {
        return absl::InvalidArgumentError("adapter_ref.name is required");
      }
      p.adapter = AdapterId{"", r.adapter_ref().name(), r.adapter_ref().version()};
      break;
    case oft::v1::GenerateRequest::kAlias:
      p.alias = r.alias();
      break;
    default:
      break;
  }
  switch (r.prompt_case()) {
    case oft::v1::GenerateRequest::kText:
      p.text = r.text();
      break;
    case oft::v1::GenerateRequest::kChat: {
      std::vector<Message> messages;
      for (const auto& m : r.chat().messages()) messages.push_back({m.role(), m.content()});
      p.chat = std::move(messages);
      if (r.chat().has_enable_thinking()) p.enable_thinking = r.chat().enable_thinking();
      break;
    }
    default:
      break;
  }
  p.max_tokens = r.max_tokens();
  if (r.has_temperature()) p.temperature = r.temperature();
  if (r.has_top_p()) p.top_p = r.top_p();
  if (r.has_top_k()) p.top_k = r.top_k();
  p.stop.assign(r.stop().begin(), r.stop().end());
  if (r.has_seed()) p.seed = r.seed();
  return p;
}

}  // namespace

InferenceServiceImpl::InferenceServiceImpl(InferenceBackend* backend, Executor* executor,
                                           Authenticate authenticate, ObserveRpc observe_rpc)
    : backend_(backend),
      executor_(executor),
      authenticate_(std::move(authenticate)),
      observe_rpc_(std::move(observe_rpc)) {}

grpc::ServerUnaryReactor* InferenceServiceImpl::RunUnary(
    grpc::CallbackServerContext* ctx, const char* method,
    std::function<absl::Status(const std::string& tenant)> fn) {
  auto* reactor = ctx->DefaultReactor();
  const auto start = Clock::now();
  auto finish = [this, reactor, start, name = absl::StrCat(kPrefix, method)](const absl::Status& s) {
    const grpc::Status g = ToGrpcStatus(s);
    if (observe_rpc_) observe_rpc_(name, g, Since(start));
    reactor->Finish(g);
  };
  const bool queued = executor_->Schedule([this, ctx, finish, fn = std::move(fn)] {
    absl::StatusOr<std::string> tenant = authenticate_(ctx);
    finish(tenant.ok() ? fn(*tenant) : tenant.status());
  });
  if (!queued) finish(absl::UnavailableError("server is shutting down"));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::LoadAdapter(grpc::CallbackServerContext* ctx,
                                                            const oft::v1::LoadAdapterRequest* request,
                                                            oft::v1::LoadedAdapter* response) {
  return RunUnary(ctx, "LoadAdapter", [this, request, response](const std::string& tenant) {
    absl::Status s = RequireRef(request->ref(), /*positive_version=*/false);
    if (!s.ok()) return s;
    auto info = backend_->LoadAdapter(tenant, request->ref().name(), request->ref().version());
    if (!info.ok()) return info.status();
    ToProto(*info, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::UnloadAdapter(
    grpc::CallbackServerContext* ctx, const oft::v1::UnloadAdapterRequest* request,
    oft::v1::UnloadAdapterResponse* /*response*/) {
  return RunUnary(ctx, "UnloadAdapter", [this, request](const std::string& tenant) {
    absl::Status s = RequireRef(request->ref(), /*positive_version=*/true);
    if (!s.ok()) return s;
    return backend_->UnloadAdapter(tenant, request->ref().name(), request->ref().version());
  });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ListLoadedAdapters(
    grpc::CallbackServerContext* ctx, const oft::v1::ListLoadedAdaptersRequest* /*request*/,
    oft::v1::ListLoadedAdaptersResponse* response) {
  return RunUnary(ctx, "ListLoadedAdapters", [this, response](const std::string& tenant) {
    const RegistryListing l = backend_->ListLoadedAdapters(tenant);
    for (const auto& a : l.adapters) ToProto(a, response->add_adapters());
    for (const auto& a : l.aliases) ToProto(a, response->add_aliases());
    response->set_adapter_memory_used_bytes(l.memory_used_bytes);
    response->set_adapter_memory_budget_bytes(l.memory_budget_bytes);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::SetAlias(grpc::CallbackServerContext* ctx,
                                                         const oft::v1::SetAliasRequest* request,
                                                         oft::v1::Alias* response) {
  return RunUnary(ctx, "SetAlias", [this, request, response](const std::string& tenant) {
    if (request->alias().empty()) return absl::InvalidArgumentError("alias is required");
    absl::Status s = RequireRef(request->target(), /*positive_version=*/false);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("target: ", s.message()));
    auto info = backend_->SetAlias(tenant, request->alias(), request->target().name(),
                                   request->target().version());
    if (!info.ok()) return info.status();
    ToProto(*info, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::DeleteAlias(
    grpc::CallbackServerContext* ctx, const oft::v1::DeleteAliasRequest* request,
    oft::v1::DeleteAliasResponse* /*response*/) {
  return RunUnary(ctx, "DeleteAlias", [this, request](const std::string& tenant) {
    if (request->alias().empty()) return absl::InvalidArgumentError("alias is required");
    return backend_->DeleteAlias(tenant, request->alias());
  });
}

// One Generate stream. Engine callbacks (engine thread) queue responses; at most one write
// is in flight; the stream finishes after the engine's on_done and the last write.
class InferenceServiceImpl::GenerateReactor final
    : public grpc::ServerWriteReactor<oft::v1::GenerateResponse> {
 public:
  // Lifetime: one reference for gRPC (dropped in OnDone), one for the start task and one
  // for the engine (dropped after its on_done); the last drop deletes the reactor.
  GenerateReactor(InferenceServiceImpl* service, grpc::CallbackServerContext* ctx,
                  const oft::v1::GenerateRequest* request)
      : service_(service), start_(Clock::now()) {
    refs_.fetch_add(1);  // the start task
    // Authentication, tokenization and an on-demand adapter load block: off gRPC's thread.
    if (!service_->executor_->Schedule([this, ctx, request] { Start(ctx, request); })) {
      FinishNow(absl::UnavailableError("server is shutting down"));
      Release();
    }
  }

  void Start(grpc::CallbackServerContext* ctx, const oft::v1::GenerateRequest* request) {
    absl::Status status = [&]() -> absl::Status {
      {
        absl::MutexLock lock(&mu_);
        if (cancelled_) return absl::CancelledError("the client cancelled the request");
      }
      absl::StatusOr<std::string> tenant = service_->authenticate_(ctx);
      if (!tenant.ok()) return tenant.status();
      absl::StatusOr<GenerateParams> params = ParamsFromProto(*request);
      if (!params.ok()) return params.status();
      refs_.fetch_add(1);  // the engine's, dropped after on_done
      absl::StatusOr<GenerateStart> started = service_->backend_->StartGenerate(
          *tenant, *params, [this](const GenerationChunk& c) { OnChunk(c); },
          [this](const GenerationOutcome& o) { OnOutcome(o); });
      if (!started.ok()) {
        refs_.fetch_sub(1);  // no engine callbacks will come; gRPC still holds a reference
        return started.status();
      }
      absl::MutexLock lock(&mu_);
      started_ = true;
      ticket_ = started->ticket;
      // The first response names the serving version and the seed; chunks that arrived
      // before StartGenerate returned are merged into it.
      oft::v1::GenerateResponse first;
      if (started->served_by) ToProto(*started->served_by, first.mutable_served_by());
      first.set_seed(started->seed);
      for (auto& r : queue_) Merge(first, r);
      queue_.clear();
      queue_.push_back(std::move(first));
      if (cancelled_) service_->backend_->CancelGenerate(ticket_);
      MaybeWriteLocked();
      return absl::OkStatus();
    }();
    if (!status.ok()) FinishNow(status);
    Release();
  }

  void Release() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      // The client is gone: stop generating; finish once the engine reports.
      if (started_) service_->backend_->CancelGenerate(ticket_);
      write_failed_ = true;
    }
    MaybeWriteLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (started_) service_->backend_->CancelGenerate(ticket_);
  }

  void OnDone() override {
    if (service_->observe_rpc_) {
      service_->observe_rpc_(absl::StrCat(kPrefix, "Generate"), final_status_, Since(start_));
    }
    Release();
  }

 private:
  void FinishNow(const absl::Status& s) {
    final_status_ = ToGrpcStatus(s);
    Finish(final_status_);
  }

  void OnChunk(const GenerationChunk& c) {
    absl::MutexLock lock(&mu_);
    oft::v1::GenerateResponse r;
    r.set_text_delta(c.text_delta);
    for (int32_t id : c.token_ids) r.add_token_ids(id);
    Enqueue(std::move(r));
    MaybeWriteLocked();
  }

  void OnOutcome(const GenerationOutcome& o) {
    OnOutcomeLocked(o);
    Release();  // the engine's reference: it calls nothing after on_done
  }

  void OnOutcomeLocked(const GenerationOutcome& o) {
    absl::MutexLock lock(&mu_);
    done_ = true;
    if (o.status.ok()) {
      oft::v1::GenerateResponse r;
      r.set_finish_reason(ToProto(o.finish_reason));
      r.mutable_usage()->set_prompt_tokens(o.prompt_tokens);
      r.mutable_usage()->set_completion_tokens(static_cast<int64_t>(o.tokens.size()));
      r.mutable_usage()->set_time_to_first_token_seconds(o.time_to_first_token_seconds);
      Enqueue(std::move(r));
      final_status_ = grpc::Status::OK;
    } else {
      final_status_ = ToGrpcStatus(o.status);
      queue_.clear();  // an error ends the stream without the unsent tokens
    }
    MaybeWriteLocked();
  }

  // dst followed by src: token ids and text appended, other set fields taken from src.
  static void Merge(oft::v1::GenerateResponse& dst, const oft::v1::GenerateResponse& src) {
    std::string text = dst.text_delta() + src.text_delta();
    dst.MergeFrom(src);
    dst.set_text_delta(std::move(text));
  }

  // Coalesces into the last queued (unsent) response.
  void Enqueue(oft::v1::GenerateResponse r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (queue_.empty()) {
      queue_.push_back(std::move(r));
    } else {
      Merge(queue_.back(), r);
    }
  }

  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (write_failed_) queue_.clear();
    if (started_ && !queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    if (done_ && queue_.empty()) {
      finished_ = true;
      Finish(final_status_);
    }
  }

  InferenceServiceImpl* const service_;
  const Clock::time_point start_;
  std::atomic<int> refs_{1};
  absl::Mutex mu_;
  std::deque<oft::v1::GenerateResponse> queue_ ABSL_GUARDED_BY(mu_);
  oft::v1::GenerateResponse current_;  // the write in flight
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t ticket_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::Status final_status_;
};

grpc::ServerWriteReactor<oft::v1::GenerateResponse>* InferenceServiceImpl::Generate(
    grpc::CallbackServerContext* ctx, const oft::v1::GenerateRequest* request) {
  return new GenerateReactor(this, ctx, request);
}

}  // namespace oft
