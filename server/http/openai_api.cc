#include "server/http/openai_api.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "server/artifacts/store.h"
#include "server/common/echo.h"
#include "server/http/http_reply.h"
#include "server/http/openai_fine_tuning_api.h"
#include "server/http/openai_types.h"
#include "server/serving/serving.h"

namespace oft {
namespace {

using json = nlohmann::json;

std::atomic<uint64_t> g_next_id{1};

std::string NewId(const char* prefix) {
  return absl::StrCat(prefix, absl::Hex(absl::ToUnixNanos(absl::Now()), absl::kZeroPad16), "-",
                      g_next_id.fetch_add(1));
}

// Fills params.base_model / adapter / alias from the request's model field (order in the
// header comment).
absl::Status ResolveModel(const OpenAiEnv& env, const std::string& tenant, OpenAiRequest& r) {
  absl::StatusOr<ModelRef> ref = ParseModelRef(r.model);
  if (!ref.ok()) return ref.status();
  if (ref->version > 0) {
    r.params.adapter = AdapterId{"", ref->name, ref->version};
    return absl::OkStatus();
  }
  if (std::find(env.base_models.begin(), env.base_models.end(), ref->name) != env.base_models.end()) {
    r.params.base_model = ref->name;
    return absl::OkStatus();
  }
  for (const AliasInfo& a : env.backend->ListLoadedAdapters(tenant).aliases) {
    if (a.alias == ref->name) {
      r.params.alias = ref->name;
      return absl::OkStatus();
    }
  }
  r.params.adapter = AdapterId{"", ref->name, 0};
  return absl::OkStatus();
}

// NOT_FOUND from the backend names its own fields; say it in terms of `model`.
absl::Status ModelError(const OpenAiEnv& env, const OpenAiRequest& r, const absl::Status& s) {
  if (!absl::IsNotFound(s)) return s;
  return absl::NotFoundError(absl::StrCat(
      "model \"", Echo(r.model), "\" not found: no base model (", absl::StrJoin(env.base_models, ", "),
      "), alias or published adapter of yours has that name (", s.message(), ")"));
}

// One request's generation, shared by the engine callbacks and the HTTP handler thread.
struct Generation {
  absl::Mutex mu;
  std::deque<std::string> pieces ABSL_GUARDED_BY(mu);  // text not yet sent (streaming)
  std::optional<GenerationOutcome> outcome ABSL_GUARDED_BY(mu);
  uint64_t ticket = 0;
  int64_t prompt_tokens = 0;
};

absl::StatusOr<std::shared_ptr<Generation>> Start(const OpenAiEnv& env, const std::string& tenant,
                                                  const OpenAiRequest& r) {
  auto g = std::make_shared<Generation>();
  std::function<void(const GenerationChunk&)> on_chunk;
  if (r.stream) {
    on_chunk = [g](const GenerationChunk& c) {
      if (c.text_delta.empty()) return;
      absl::MutexLock lock(&g->mu);
      g->pieces.push_back(c.text_delta);
    };
  }
  absl::StatusOr<GenerateStart> started = env.backend->StartGenerate(
      tenant, r.params, std::move(on_chunk), [g](const GenerationOutcome& o) {
        absl::MutexLock lock(&g->mu);
        g->outcome = o;
      });
  if (!started.ok()) return ModelError(env, r, started.status());
  g->ticket = started->ticket;
  g->prompt_tokens = started->prompt_tokens;
  return g;
}

bool HasOutcome(Generation* g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(g->mu) { return g->outcome.has_value(); }
bool HasWork(Generation* g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(g->mu) {
  return g->outcome.has_value() || !g->pieces.empty();
}

void Complete(const OpenAiEnv& env, const std::string& tenant, OpenAiRequest r,
              httplib::Response& res) {
  absl::StatusOr<std::shared_ptr<Generation>> g = Start(env, tenant, r);
  if (!g.ok()) return SendError(res, g.status());
  Generation* gen = g->get();
  const absl::Time deadline = absl::Now() + env.max_request_time;
  gen->mu.Lock();
  bool cancelled = false;
  while (!gen->outcome) {
    gen->mu.AwaitWithTimeout(absl::Condition(&HasOutcome, gen), absl::Milliseconds(100));
    if (!gen->outcome && !cancelled && (env.stopping->load() || absl::Now() > deadline)) {
      cancelled = true;
      gen->mu.Unlock();
      env.backend->CancelGenerate(gen->ticket);
      gen->mu.Lock();
    }
  }
  GenerationOutcome outcome = *gen->outcome;
  gen->mu.Unlock();
  if (!outcome.status.ok()) return SendError(res, outcome.status);
  SendJson(res, 200, CompletionResponse(r, NewId("cmpl-"), absl::ToUnixSeconds(absl::Now()), outcome));
}

std::string Event(const json& body) { return absl::StrCat("data: ", body.dump(), "\n\n"); }

void Stream(const OpenAiEnv& env, const std::string& tenant, OpenAiRequest r,
            httplib::Response& res) {
  absl::StatusOr<std::shared_ptr<Generation>> started = Start(env, tenant, r);
  if (!started.ok()) return SendError(res, started.status());
  std::shared_ptr<Generation> g = *started;
  const std::string id = NewId(r.endpoint == OpenAiEndpoint::kChatCompletions ? "chatcmpl-" : "cmpl-");
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  const absl::Time deadline = absl::Now() + env.max_request_time;
  InferenceBackend* backend = env.backend;
  std::shared_ptr<std::atomic<bool>> stopping = env.stopping;
  auto first = std::make_shared<bool>(true);
  auto cancelled = std::make_shared<bool>(false);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [g, r, id, created, deadline, backend, stopping, first, cancelled](size_t, httplib::DataSink& sink) {
        std::deque<std::string> pieces;
        std::optional<GenerationOutcome> outcome;
        {
          absl::MutexLock lock(&g->mu);
          // Wake at least every 100 ms to notice a closed connection or the deadline.
          g->mu.AwaitWithTimeout(absl::Condition(&HasWork, g.get()), absl::Milliseconds(100));
          pieces.swap(g->pieces);
          if (g->pieces.empty()) outcome = g->outcome;
        }
        if (!sink.is_writable()) return false;  // the client left: the releaser cancels
        if (!*cancelled && (stopping->load() || absl::Now() > deadline)) {
          *cancelled = true;
          backend->CancelGenerate(g->ticket);
        }
        for (const std::string& p : pieces) {
          const std::string e = Event(CompletionChunk(r, id, created, p, *first, nullptr));
          *first = false;
          if (!sink.write(e.data(), e.size())) return false;
        }
        if (!outcome) return true;
        std::string tail;
        if (outcome->status.ok()) {
          tail = Event(CompletionChunk(r, id, created, "", *first, &outcome->finish_reason));
          if (r.include_usage) {
            tail += Event(UsageChunk(r, id, created, outcome->prompt_tokens,
                                     static_cast<int64_t>(outcome->tokens.size())));
          }
        } else {
          tail = Event(ErrorBody(outcome->status));
        }
        tail += "data: [DONE]\n\n";
        if (!sink.write(tail.data(), tail.size())) return false;
        sink.done();
        return true;
      },
      [g, backend](bool success) {
        if (success) return;
        bool finished;
        {
          absl::MutexLock lock(&g->mu);
          finished = g->outcome.has_value();
        }
        if (!finished) backend->CancelGenerate(g->ticket);  // e.g. the client disconnected
      });
}

void Generate(const OpenAiEnv& env, OpenAiEndpoint endpoint, const httplib::Request& req,
              httplib::Response& res) {
  absl::StatusOr<std::string> tenant = AuthenticateRequest(env, req);
  if (!tenant.ok()) return SendError(res, tenant.status());
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(endpoint, req.body);
  if (!r.ok()) return SendError(res, r.status());
  if (absl::Status s = ResolveModel(env, *tenant, *r); !s.ok()) return SendError(res, s);
  if (r->stream) return Stream(env, *tenant, std::move(*r), res);
  Complete(env, *tenant, std::move(*r), res);
}

int64_t UnixSeconds(const std::string& rfc3339) {
  absl::Time t;
  std::string err;
  return absl::ParseTime(absl::RFC3339_full, rfc3339, &t, &err) ? absl::ToUnixSeconds(t) : 0;
}

json ModelObject(const std::string& id, int64_t created, const std::string& owned_by,
                 const std::string& parent, const std::string& root) {
  return {{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", owned_by},
          {"parent", parent.empty() ? json(nullptr) : json(parent)}, {"root", root}};
}

// Base models, the tenant's published adapters (name = latest version, and each
// name:version) and aliases.
absl::StatusOr<std::vector<json>> ListModels(const OpenAiEnv& env, const std::string& tenant) {
  std::vector<json> out;
  for (const std::string& b : env.base_models) out.push_back(ModelObject(b, 0, "system", "", b));
  absl::StatusOr<std::vector<AdapterManifest>> published = env.adapters->List(tenant);
  if (!published.ok()) return published.status();
  std::map<std::string, const AdapterManifest*> latest;
  for (const AdapterManifest& m : *published) {
    const std::string id = absl::StrCat(m.name, ":", m.version);
    out.push_back(ModelObject(id, UnixSeconds(m.created_at), tenant, m.base_model, id));
    const AdapterManifest*& l = latest[m.name];
    if (!l || l->version < m.version) l = &m;
  }
  for (const auto& [name, m] : latest) {
    out.push_back(ModelObject(name, UnixSeconds(m->created_at), tenant, m->base_model,
                              absl::StrCat(name, ":", m->version)));
  }
  for (const AliasInfo& a : env.backend->ListLoadedAdapters(tenant).aliases) {
    const std::string target = absl::StrCat(a.target.name, ":", a.target.version);
    std::string base;
    for (const AdapterManifest& m : *published) {
      if (m.name == a.target.name && m.version == a.target.version) base = m.base_model;
    }
    out.push_back(ModelObject(a.alias, absl::ToUnixSeconds(a.update_time), tenant, base, target));
  }
  return out;
}

}  // namespace

void RegisterOpenAiRoutes(httplib::Server& server, const OpenAiEnv& env) {
  server.Get("/v1/models", [env](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<std::string> tenant = AuthenticateRequest(env, req);
    if (!tenant.ok()) return SendError(res, tenant.status());
    absl::StatusOr<std::vector<json>> models = ListModels(env, *tenant);
    if (!models.ok()) return SendError(res, models.status());
    SendJson(res, 200, {{"object", "list"}, {"data", *models}});
  });
  server.Get(R"(/v1/models/([^/]+))", [env](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<std::string> tenant = AuthenticateRequest(env, req);
    if (!tenant.ok()) return SendError(res, tenant.status());
    absl::StatusOr<std::vector<json>> models = ListModels(env, *tenant);
    if (!models.ok()) return SendError(res, models.status());
    const std::string id = req.matches[1];
    for (const json& m : *models) {
      if (m["id"] == id) return SendJson(res, 200, m);
    }
    SendError(res, absl::NotFoundError(absl::StrCat("model \"", Echo(id), "\" not found")));
  });
  server.Post("/v1/completions", [env](const httplib::Request& req, httplib::Response& res) {
    Generate(env, OpenAiEndpoint::kCompletions, req, res);
  });
  server.Post("/v1/chat/completions", [env](const httplib::Request& req, httplib::Response& res) {
    Generate(env, OpenAiEndpoint::kChatCompletions, req, res);
  });
  if (env.service != nullptr && env.jobs != nullptr) RegisterFineTuningRoutes(server, env);
}

}  // namespace oft
