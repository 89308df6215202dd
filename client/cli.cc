#include "client/cli.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/cli_args.h"
#include "client/cli_import.h"
#include "client/job_file.h"
#include "client/oft_client.h"
#include "client/progress.h"
#include "google/protobuf/util/json_util.h"

namespace oft {
namespace {

constexpr char kUsageHead[] = R"(usage: oftctl [global flags] <command> [args] [flags]
       oftctl --help | --version

Global flags:
  --server=HOST:PORT     server address [$OFT_SERVER or 127.0.0.1:50051]
  --api-key=KEY          API key [$OFT_API_KEY]
  --tls                  use TLS; --ca-cert=PEM, --client-cert=PEM --client-key=PEM (mTLS),
                         --tls-server-name=NAME (expected certificate name)
  --deadline=SECONDS     deadline of unary calls [30]
  --json                 print responses as proto3 JSON (streams: one object per line)

Commands:
)";

constexpr char kUsageTail[] = R"(
Exit codes: 0 ok, 1 RPC error, 2 usage error, 3 watched job FAILED, 4 watched job
CANCELLED, 5 download checksum mismatch, 6 a local file (the upload's FILE, --file,
--chat-file, a TLS PEM, an imported adapter's files) cannot be read.
--max-steps and --epochs exclude each other; either replaces the job file's choice.
)";

std::string FormatTime(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixSeconds(ts.seconds()),
                          absl::LocalTimeZone());
}

std::string FormatName(absl::string_view enum_name, absl::string_view prefix) {
  return std::string(absl::StripPrefix(enum_name, prefix));
}

// A command's execution context.
class Cli {
 public:
  Cli(const Args& args, const CliEnv& env)
      : args_(args), env_(env), out_(*env.out), err_(*env.err), json_(args.GetBool("json")) {}

  // One oftctl command: its synopsis (name, arguments, flags) for the usage text, the
  // flags it accepts besides the global ones, how many positional arguments it takes, and
  // what runs it.
  using Positional = std::vector<std::string>;
  struct Command {
    const char* name;
    const char* synopsis;  // arguments and flags after the name, for the usage text
    const char* help;      // one line ("" = none); continuation lines start with spaces
    std::set<std::string> flags;
    size_t min_args, max_args;  // positional arguments after the command name
    int (*run)(Cli& cli, const Positional& args);
  };

  // The command table: usage text, flag checks and dispatch all come from it.
  static const std::vector<Command>& Commands() {
    // One row per command reads better than one line per field.
    // clang-format off
    static const auto* const kCommands = new std::vector<Command>{
        {"upload", "FILE --name=N [--format=text|prompt_completion|chat]", "", {"name", "format"},
         1, 1, [](Cli& c, const Positional& p) { return c.Upload(p[0]); }},
        {"datasets", "", "list uploaded datasets", {}, 0, 0,
         [](Cli& c, const Positional&) { return c.Datasets(); }},
        {"submit", "[--file=job.yaml|job.json] [--watch] [--idempotency-key=K] [spec flags]",
         "    spec flags (override the file): --base-model --dataset=ID (repeatable)\n"
         "    --validation-dataset=ID | --validation-fraction=F --output-adapter=NAME --priority\n"
         "    --learning-rate --max-steps | --epochs --batch-size --max-seq-len --oft-block-size | --r\n"
         "    --target-modules=a,b --seed --eval-every --warmup-steps --schedule --grad-accum-steps\n"
         "    --weight-decay --max-grad-norm --pack --checkpoint-every --early-stopping-patience\n"
         "    --select-best --quantize-base-nf4 --bias ... and --set=FIELD.PATH=VALUE for any field",
         {"file", "watch", "idempotency-key"}, 0, 0,
         [](Cli& c, const Positional&) { return c.Submit(); }},
        {"status", "JOB", "", {}, 1, 1, [](Cli& c, const Positional& p) { return c.Status(p[0]); }},
        {"list", "[--state=RUNNING[,QUEUED...]]", "", {"state"}, 0, 0,
         [](Cli& c, const Positional&) { return c.List(); }},
        {"watch", "JOB [--after=EVENT_ID]", "follow a job; exit code reflects its final state",
         {"after"}, 1, 1, [](Cli& c, const Positional& p) { return c.Watch(p[0]); }},
        {"cancel", "JOB", "", {}, 1, 1, [](Cli& c, const Positional& p) { return c.Cancel(p[0]); }},
        {"download", "NAME[:VERSION] --out=DIR [--files=a,b]", "verifies each file's sha256",
         {"out", "files"}, 1, 1, [](Cli& c, const Positional& p) { return c.Download(p[0]); }},
        {"import-adapter", "DIR --name=N --base-model=B [--description=D]",
         "    publish a PEFT adapter dir (adapter_config.json + adapter_model.safetensors)",
         {"name", "base-model", "description"}, 1, 1, [](Cli& c, const Positional& p) {
           return RunImportAdapter(*c.client_, p[0], c.args_, c.json_, c.out_, c.err_); }},
        {"adapters", "[--name=NAME]", "", {"name"}, 0, 0,
         [](Cli& c, const Positional&) { return c.Adapters(); }},
        {"delete-adapter", "NAME:VERSION", "", {}, 1, 1,
         [](Cli& c, const Positional& p) { return c.DeleteAdapter(p[0]); }},
        {"delete-dataset", "ID", "", {}, 1, 1,
         [](Cli& c, const Positional& p) { return c.DeleteDataset(p[0]); }},
        {"models", "", "base models the server trains on", {}, 0, 0,
         [](Cli& c, const Positional&) { return c.Models(); }},
        {"generate",
         "(--adapter=NAME[:V] | --alias=A) (--prompt=TEXT | --chat-file=F) [--max-tokens=N]",
         "    [--temperature=T] [--top-p=P] [--top-k=K] [--seed=S] [--stop=S]... [--base-model=M]"
         " [--enable-thinking=true|false]",
         {"adapter", "alias", "prompt", "chat-file", "max-tokens", "temperature", "top-p", "top-k",
          "seed", "stop", "base-model", "enable-thinking"},
         0, 0, [](Cli& c, const Positional&) { return c.Generate(); }},
        {"load", "NAME[:VERSION]", "", {}, 1, 1,
         [](Cli& c, const Positional& p) { return c.Load(p[0]); }},
        {"unload", "NAME:VERSION", "", {}, 1, 1,
         [](Cli& c, const Positional& p) { return c.Unload(p[0]); }},
        {"loaded", "", "adapters loaded for inference", {}, 0, 0,
         [](Cli& c, const Positional&) { return c.Loaded(); }},
        {"alias", "set ALIAS NAME[:VERSION] | delete ALIAS", "", {}, 2, 3,
         [](Cli& c, const Positional& p) { return c.Alias(p); }},
    };
    // clang-format on
    return *kCommands;
  }

  static std::string UsageText() {
    std::string text = kUsageHead;
    for (const Command& c : Commands()) {
      std::string line = absl::StrCat("  ", c.name, *c.synopsis ? " " : "", c.synopsis);
      const std::string help = c.help;
      if (!help.empty() && help[0] != ' ') {
        if (line.size() < 40) line.resize(40, ' ');
        absl::StrAppend(&line, "  ", help);
        absl::StrAppend(&text, line, "\n");
      } else {
        absl::StrAppend(&text, line, "\n");
        if (!help.empty()) absl::StrAppend(&text, help, "\n");
      }
    }
    return text + kUsageTail;
  }

  int Run() {
    const std::string& name = args_.positional[0];
    const auto& commands = Commands();
    const auto cmd = std::find_if(commands.begin(), commands.end(),
                                  [&](const Command& c) { return name == c.name; });
    if (cmd == commands.end()) return Usage(absl::StrCat("unknown command \"", name, "\""));
    for (const auto& [flag, value] : args_.flags) {
      if (GlobalFlags().count(flag) || cmd->flags.count(flag)) continue;
      if (name == "submit" && IsJobSpecFlag(flag)) continue;
      return Usage(absl::StrCat("unknown flag --", flag, " for \"", name, "\""));
    }
    const Positional p(args_.positional.begin() + 1, args_.positional.end());
    if (p.size() < cmd->min_args || p.size() > cmd->max_args) {
      return Usage(absl::StrCat("usage: oftctl ", name, " ", cmd->synopsis));
    }
    std::optional<UsageError> bad = MakeClient();
    if (bad) return Usage(bad->message);
    if (client_ == nullptr) return client_error_;  // MakeClient printed the error
    return cmd->run(*this, p);
  }

 private:
  int Usage(absl::string_view message) {
    err_ << "oftctl: " << message << "\nRun 'oftctl --help' for usage.\n";
    return kExitUsage;
  }
  int Fail(const absl::Status& status, bool is_download = false) {
    err_ << FormatCliError(status) << "\n";
    return ExitCodeForStatus(status, is_download);
  }
  // A local file could not be read: no RPC was made, so not the RPC error's exit code.
  int FailLocal(const absl::Status& status) {
    err_ << "oftctl: " << status.message() << "\n";
    return kExitLocalFile;
  }
  // Whether `path` can be opened for reading; FailLocal's status otherwise.
  static absl::Status Readable(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (in) return absl::OkStatus();
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  void Print(const google::protobuf::Message& msg) { out_ << ToJson(msg, true) << "\n"; }

  std::optional<UsageError> MakeClient() {
    ClientOptions o;
    o.server = args_.Get("server", env_.server_env.empty() ? o.server : env_.server_env);
    o.api_key = args_.Get("api-key", env_.api_key_env);
    o.tls = args_.GetBool("tls");
    o.ca_cert_file = args_.Get("ca-cert");
    o.client_cert_file = args_.Get("client-cert");
    o.client_key_file = args_.Get("client-key");
    o.tls_server_name_override = args_.Get("tls-server-name");
    if (!o.tls &&
        (!o.ca_cert_file.empty() || !o.client_cert_file.empty() || !o.client_key_file.empty())) {
      return UsageError{"--ca-cert, --client-cert and --client-key need --tls"};
    }
    double deadline_s = 0;
    if (auto e = ParseNumber(args_, "deadline", &deadline_s)) return e;
    if (args_.Has("deadline")) {
      if (!(deadline_s > 0)) return UsageError{"--deadline must be > 0 seconds"};
      o.deadline = absl::Seconds(deadline_s);
    }
    for (const std::string* pem : {&o.ca_cert_file, &o.client_cert_file, &o.client_key_file}) {
      if (pem->empty()) continue;
      if (absl::Status r = Readable(*pem); !r.ok()) {
        client_error_ = FailLocal(r);
        return std::nullopt;
      }
    }
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(o);
    if (!client.ok()) {
      Fail(client.status());
      return std::nullopt;
    }
    client_ = std::move(*client);
    return std::nullopt;
  }

  // ------------------------------------------------------------------------ datasets
  int Upload(const std::string& path) {
    std::string name = args_.Get("name");
    if (name.empty()) name = std::filesystem::path(path).stem().string();
    v1::DatasetFormat format = v1::DATASET_FORMAT_UNSPECIFIED;
    if (args_.Has("format")) {
      const std::string f = absl::AsciiStrToUpper(args_.Get("format"));
      if (!v1::DatasetFormat_Parse(absl::StrCat("DATASET_FORMAT_", f), &format) ||
          format == v1::DATASET_FORMAT_UNSPECIFIED) {
        return Usage(absl::StrCat("--format must be text, prompt_completion or chat, got \"",
                                  args_.Get("format"), "\""));
      }
    }
    if (absl::Status r = Readable(path); !r.ok()) return FailLocal(r);
    absl::StatusOr<v1::Dataset> ds = client_->UploadDataset(path, name, format);
    if (!ds.ok()) return Fail(ds.status());
    if (json_) {
      Print(*ds);
    } else {
      out_ << "uploaded " << ds->id() << ": " << ds->name() << ", "
           << FormatName(v1::DatasetFormat_Name(ds->format()), "DATASET_FORMAT_") << ", "
           << ds->validation().rows() << " rows, " << FormatBytes(ds->size_bytes()) << "\n";
    }
    return kExitOk;
  }

  int Datasets() {
    v1::ListDatasetsResponse all;
    v1::ListDatasetsRequest req;
    req.set_page_size(1000);
    while (true) {
      absl::StatusOr<v1::ListDatasetsResponse> page = client_->ListDatasets(req);
      if (!page.ok()) return Fail(page.status());
      for (auto& d : *page->mutable_datasets()) *all.add_datasets() = std::move(d);
      if (page->next_page_token().empty()) break;
      req.set_page_token(page->next_page_token());
    }
    if (json_) {
      Print(all);
      return kExitOk;
    }
    out_ << absl::StrFormat("%-30s %-24s %-17s %8s %10s  %s\n", "ID", "NAME", "FORMAT", "ROWS",
                            "SIZE", "CREATED");
    for (const auto& d : all.datasets()) {
      out_ << absl::StrFormat("%-30s %-24s %-17s %8d %10s  %s\n", d.id(), d.name(),
                              FormatName(v1::DatasetFormat_Name(d.format()), "DATASET_FORMAT_"),
                              d.validation().rows(), FormatBytes(d.size_bytes()),
                              FormatTime(d.create_time()));
    }
    return kExitOk;
  }

  int DeleteDataset(const std::string& id) {
    absl::Status s = client_->DeleteDataset(id);
    if (!s.ok()) return Fail(s);
    if (json_) {
      out_ << "{}\n";
    } else {
      out_ << "deleted dataset " << id << "\n";
    }
    return kExitOk;
  }

  // ---------------------------------------------------------------------------- jobs
  int Submit() {
    v1::CreateJobRequest req;
    if (args_.Has("file")) {
      absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(args_.Get("file"));
      if (!spec.ok()) {
        if (spec.status().code() == absl::StatusCode::kInvalidArgument) {
          return Usage(spec.status().message());
        }
        return FailLocal(spec.status());
      }
      *req.mutable_spec() = std::move(*spec);
    }
    std::vector<std::pair<std::string, std::string>> spec_flags;
    for (const auto& f : args_.flags) {
      if (IsJobSpecFlag(f.first)) spec_flags.push_back(f);
    }
    absl::Status applied = ApplyJobSpecFlags(spec_flags, req.mutable_spec());
    if (!applied.ok()) return Usage(applied.message());
    req.set_idempotency_key(args_.Get("idempotency-key"));
    absl::StatusOr<v1::Job> job = client_->CreateJob(req);
    if (!job.ok()) return Fail(job.status());
    if (json_) {
      out_ << ToJson(*job, !args_.GetBool("watch")) << "\n";
    } else {
      out_ << "submitted " << job->id() << " (" << StateName(job->state());
      if (job->queue_position() > 0) out_ << ", queue position " << job->queue_position();
      out_ << ")\n";
    }
    out_.flush();
    if (!args_.GetBool("watch")) return kExitOk;
    return WatchFrom(job->id(), 0);
  }

  int Status(const std::string& id) {
    absl::StatusOr<v1::Job> job = client_->GetJob(id);
    if (!job.ok()) return Fail(job.status());
    if (json_) {
      Print(*job);
      return kExitOk;
    }
    const v1::Job& j = *job;
    auto row = [&](absl::string_view k, absl::string_view v) {
      out_ << absl::StrFormat("%-12s %s\n", absl::StrCat(k, ":"), v);
    };
    row("job", j.id());
    row("state",
        absl::StrCat(StateName(j.state()), j.cancel_requested() ? " (cancel requested)" : ""));
    if (j.state() == v1::Job::QUEUED) {
      row("queue", absl::StrCat("position ", j.queue_position(),
                                j.queue_reason().empty() ? "" : ": ", j.queue_reason()));
    }
    row("base model", j.spec().base_model());
    row("datasets", absl::StrJoin(j.spec().training_dataset_ids(), ", "));
    row("adapter", j.has_result() ? FormatAdapterRef(j.result()) : j.spec().output_adapter_name());
    if (j.progress().step() > 0 || j.progress().total_steps() > 0) {
      std::string prog = absl::StrCat(j.progress().step());
      if (j.progress().total_steps() > 0) {
        absl::StrAppend(
            &prog, "/", j.progress().total_steps(),
            absl::StrFormat(" (%.0f%%)", 100.0 * j.progress().step() / j.progress().total_steps()));
      }
      absl::StrAppend(&prog, absl::StrFormat(", epoch %.2f", j.progress().epoch()));
      row("progress", prog);
      std::string loss = absl::StrFormat("%.4f", j.metrics().loss());
      if (j.metrics().has_eval_loss()) {
        absl::StrAppend(&loss, absl::StrFormat(" (eval %.4f)", j.metrics().eval_loss()));
      }
      row("loss", loss);
      row("lr", absl::StrFormat("%.3g", j.metrics().learning_rate()));
      row("tokens/s", FormatCount(j.metrics().tokens_per_second()));
    }
    if (j.state() == v1::Job::RUNNING || j.state() == v1::Job::QUEUED) {
      row("eta", FormatEta(j.eta_seconds()));
    }
    if (j.state() == v1::Job::FAILED) {
      std::string f = v1::JobFailure::Reason_Name(j.failure().reason());
      if (!j.failure().field().empty()) absl::StrAppend(&f, " (", j.failure().field(), ")");
      absl::StrAppend(&f, ": ", j.failure().message());
      row("failure", f);
    }
    row("created", FormatTime(j.create_time()));
    if (j.has_start_time()) row("started", FormatTime(j.start_time()));
    if (j.has_end_time()) row("ended", FormatTime(j.end_time()));
    row("events", absl::StrCat(j.latest_event_id()));
    return kExitOk;
  }

  int List() {
    std::vector<v1::Job::State> states;
    for (const std::string& v : args_.GetAll("state")) {
      for (absl::string_view s : absl::StrSplit(v, ',', absl::SkipEmpty())) {
        v1::Job::State st;
        if (!v1::Job::State_Parse(absl::AsciiStrToUpper(s), &st) ||
            st == v1::Job::STATE_UNSPECIFIED) {
          return Usage(absl::StrCat("--state: unknown state \"", s,
                                    "\" (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)"));
        }
        states.push_back(st);
      }
    }
    absl::StatusOr<std::vector<v1::Job>> jobs = client_->ListAllJobs(states);
    if (!jobs.ok()) return Fail(jobs.status());
    if (json_) {
      v1::ListJobsResponse resp;
      for (auto& j : *jobs) *resp.add_jobs() = std::move(j);
      Print(resp);
      return kExitOk;
    }
    out_ << absl::StrFormat("%-28s %-10s %-14s %-8s %-24s %s\n", "ID", "STATE", "PROGRESS", "LOSS",
                            "ADAPTER", "CREATED");
    for (const auto& j : *jobs) {
      std::string prog = "-";
      if (j.progress().total_steps() > 0) {
        prog = absl::StrCat(j.progress().step(), "/", j.progress().total_steps());
      } else if (j.progress().step() > 0) {
        prog = absl::StrCat(j.progress().step());
      }
      const std::string loss =
          j.progress().step() > 0 ? absl::StrFormat("%.4f", j.metrics().loss()) : "-";
      const std::string adapter =
          j.has_result() ? FormatAdapterRef(j.result()) : j.spec().output_adapter_name();
      out_ << absl::StrFormat("%-28s %-10s %-14s %-8s %-24s %s\n", j.id(), StateName(j.state()),
                              prog, loss, adapter, FormatTime(j.create_time()));
    }
    return kExitOk;
  }

  int Watch(const std::string& id) {
    int64_t after = 0;
    if (auto e = ParseNumber(args_, "after", &after)) return Usage(e->message);
    return WatchFrom(id, after);
  }

  int WatchFrom(const std::string& id, int64_t after) {
    absl::StatusOr<v1::Job> job = client_->GetJob(id);
    if (!job.ok()) return Fail(job.status());
    WatchProgress progress;
    progress.ApplyJob(*job);
    progress.has_step = false;  // the bar starts with the first streamed step
    const bool tty = env_.out_is_tty && !json_;
    bool bar_shown = false;
    auto draw = [&] {
      out_ << "\r" << RenderProgressLine(progress, env_.terminal_width) << "\x1b[K";
      out_.flush();
      bar_shown = true;
    };
    auto on_event = [&](const v1::JobEvent& event) {
      progress.Apply(event);
      if (json_) {
        out_ << ToJson(event, false) << "\n";
      } else if (!tty) {
        out_ << FormatEventLine(event) << "\n";
      } else if (event.has_step()) {
        draw();
        return true;
      } else {
        if (bar_shown) out_ << "\r\x1b[K";
        out_ << FormatEventLine(event) << "\n";
        bar_shown = false;
        if (progress.has_step || progress.state == v1::Job::QUEUED) draw();
      }
      out_.flush();
      return true;
    };
    absl::Status s = client_->WatchJob(id, after, on_event);
    if (bar_shown) out_ << "\n";
    out_.flush();
    if (!s.ok()) return Fail(s);
    v1::Job::State final_state = progress.state;
    absl::StatusOr<v1::Job> end = client_->GetJob(id);
    if (end.ok()) final_state = end->state();
    if (!json_) {
      out_ << id << " " << StateName(final_state);
      if (end.ok() && end->has_result()) out_ << ": published " << FormatAdapterRef(end->result());
      if (end.ok() && final_state == v1::Job::FAILED) {
        out_ << ": " << v1::JobFailure::Reason_Name(end->failure().reason()) << ": "
             << end->failure().message();
      }
      out_ << "\n";
    }
    return ExitCodeForJobState(final_state);
  }

  int Cancel(const std::string& id) {
    absl::StatusOr<v1::Job> job = client_->CancelJob(id);
    if (!job.ok()) return Fail(job.status());
    if (json_) {
      Print(*job);
    } else if (job->cancel_requested() && job->state() == v1::Job::RUNNING) {
      out_ << id << " cancel requested (stops within one optimizer step)\n";
    } else {
      out_ << id << " " << StateName(job->state()) << "\n";
    }
    return kExitOk;
  }

  // ------------------------------------------------------------------------ adapters
  int Download(const std::string& ref_text) {
    absl::StatusOr<v1::AdapterVersionRef> ref = ParseAdapterRef(ref_text);
    if (!ref.ok()) return Usage(ref.status().message());
    const std::string out_dir = args_.Get("out");
    if (out_dir.empty()) return Usage("download needs --out=DIR");
    std::vector<std::string> files;
    for (const std::string& v : args_.GetAll("files")) {
      for (absl::string_view f : absl::StrSplit(v, ',', absl::SkipEmpty())) {
        files.emplace_back(f);
      }
    }
    absl::StatusOr<std::vector<v1::AdapterFile>> got =
        client_->DownloadAdapter(*ref, out_dir, files);
    if (!got.ok()) return Fail(got.status(), /*is_download=*/true);
    if (json_) {
      v1::Adapter a;  // ref + the files written
      *a.mutable_ref() = *ref;
      for (const auto& f : *got) *a.add_files() = f;
      Print(a);
      return kExitOk;
    }
    for (const auto& f : *got) {
      out_ << "wrote " << (std::filesystem::path(out_dir) / f.name()).string() << " ("
           << FormatBytes(f.size_bytes()) << ", sha256 " << f.sha256().substr(0, 12)
           << "... verified)\n";
    }
    return kExitOk;
  }

  int Adapters() {
    absl::StatusOr<std::vector<v1::Adapter>> all = client_->ListAllAdapters(args_.Get("name"));
    if (!all.ok()) return Fail(all.status());
    if (json_) {
      v1::ListAdaptersResponse resp;
      for (auto& a : *all) *resp.add_adapters() = std::move(a);
      Print(resp);
      return kExitOk;
    }
    out_ << absl::StrFormat("%-28s %-16s %-28s %10s %-8s %s\n", "ADAPTER", "BASE", "JOB", "SIZE",
                            "LOSS", "CREATED");
    for (const auto& a : *all) {
      int64_t size = 0;
      for (const auto& f : a.files()) size += f.size_bytes();
      const auto loss = a.metrics().find("loss");
      out_ << absl::StrFormat(
          "%-28s %-16s %-28s %10s %-8s %s\n", FormatAdapterRef(a.ref()), a.base_model(), a.job_id(),
          FormatBytes(size),
          loss == a.metrics().end() ? "-" : absl::StrFormat("%.4f", loss->second),
          FormatTime(a.create_time()));
    }
    return kExitOk;
  }

  int DeleteAdapter(const std::string& ref_text) {
    absl::StatusOr<v1::AdapterVersionRef> ref = ParseAdapterRef(ref_text);
    if (!ref.ok()) return Usage(ref.status().message());
    if (ref->version() == 0) return Usage("delete-adapter needs an explicit NAME:VERSION");
    absl::Status s = client_->DeleteAdapter(*ref);
    if (!s.ok()) return Fail(s);
    if (json_) {
      out_ << "{}\n";
    } else {
      out_ << "deleted " << FormatAdapterRef(*ref) << "\n";
    }
    return kExitOk;
  }

  int Models() {
    absl::StatusOr<v1::ListBaseModelsResponse> models = client_->ListBaseModels();
    if (!models.ok()) return Fail(models.status());
    if (json_) {
      Print(*models);
      return kExitOk;
    }
    out_ << absl::StrFormat("%-20s %-20s %8s %6s %7s %8s %-9s %-8s %s\n", "NAME", "ARCHITECTURE",
                            "PARAMS", "LAYERS", "HIDDEN", "CONTEXT", "DTYPE", "CHAT", "TARGETS");
    for (const auto& m : models->models()) {
      out_ << absl::StrFormat("%-20s %-20s %8s %6d %7d %8d %-9s %-8s %s\n", m.name(),
                              m.architecture(), FormatCount(m.parameter_count()), m.num_layers(),
                              m.hidden_size(), m.max_context_tokens(), m.dtype(),
                              m.chat_template().empty() ? "-" : m.chat_template(),
                              absl::StrJoin(m.default_target_modules(), ","));
    }
    return kExitOk;
  }

  // ----------------------------------------------------------------------- inference
  int Generate() {
    v1::GenerateRequest req;
    req.set_base_model(args_.Get("base-model"));
    if (args_.Has("adapter") && args_.Has("alias")) {
      return Usage("give --adapter or --alias, not both");
    }
    if (args_.Has("adapter")) {
      absl::StatusOr<v1::AdapterVersionRef> ref = ParseAdapterRef(args_.Get("adapter"));
      if (!ref.ok()) return Usage(ref.status().message());
      *req.mutable_adapter_ref() = *ref;
    } else if (args_.Has("alias")) {
      req.set_alias(args_.Get("alias"));
    }
    if (args_.Has("prompt") == args_.Has("chat-file")) {
      return Usage("give exactly one of --prompt=TEXT and --chat-file=FILE");
    }
    if (args_.Has("prompt")) {
      req.set_text(args_.Get("prompt"));
    } else {
      absl::StatusOr<v1::ChatPrompt> chat = LoadChatPromptFile(args_.Get("chat-file"));
      if (!chat.ok()) {
        if (chat.status().code() == absl::StatusCode::kInvalidArgument) {
          return Usage(chat.status().message());
        }
        return FailLocal(chat.status());
      }
      *req.mutable_chat() = std::move(*chat);
    }
    if (args_.Has("enable-thinking")) {  // the qwen3 chat template's argument
      const std::string v = args_.Get("enable-thinking");
      if (!req.has_chat() || (v != "true" && v != "false")) {
        return Usage("--enable-thinking=true|false needs --chat-file");
      }
      req.mutable_chat()->set_enable_thinking(v == "true");
    }
    int32_t max_tokens = 0, top_k = 0;
    double temperature = 0, top_p = 0;
    uint64_t seed = 0;
    for (auto e :
         {ParseNumber(args_, "max-tokens", &max_tokens), ParseNumber(args_, "top-k", &top_k),
          ParseNumber(args_, "temperature", &temperature), ParseNumber(args_, "top-p", &top_p),
          ParseNumber(args_, "seed", &seed)}) {
      if (e) return Usage(e->message);
    }
    req.set_max_tokens(max_tokens);
    if (args_.Has("top-k")) req.set_top_k(top_k);
    if (args_.Has("temperature")) req.set_temperature(temperature);
    if (args_.Has("top-p")) req.set_top_p(top_p);
    if (args_.Has("seed")) req.set_seed(seed);
    for (const std::string& s : args_.GetAll("stop")) req.add_stop(s);

    v1::GenerateResponse first, last;
    bool have_first = false;
    absl::Status s = client_->Generate(req, [&](const v1::GenerateResponse& r) {
      if (!have_first) {
        first = r;
        have_first = true;
      }
      last = r;
      if (json_) {
        out_ << ToJson(r, false) << "\n";
      } else {
        out_ << r.text_delta();
      }
      out_.flush();
      return true;
    });
    if (!json_ && have_first) out_ << "\n";
    out_.flush();
    if (!s.ok()) return Fail(s);
    if (!json_) {
      std::string summary = absl::StrCat(
          "[",
          FormatName(v1::GenerateResponse::FinishReason_Name(last.finish_reason()),
                     "FINISH_REASON_"),
          "; ", last.usage().prompt_tokens(), " prompt + ", last.usage().completion_tokens(),
          " generated tokens",
          absl::StrFormat("; first token %.3fs", last.usage().time_to_first_token_seconds()));
      if (first.has_served_by())
        absl::StrAppend(&summary, "; ", FormatAdapterRef(first.served_by()));
      absl::StrAppend(&summary, "; seed ", first.seed(), "]");
      err_ << summary << "\n";
    }
    return kExitOk;
  }

  int Load(const std::string& ref_text) {
    absl::StatusOr<v1::AdapterVersionRef> ref = ParseAdapterRef(ref_text);
    if (!ref.ok()) return Usage(ref.status().message());
    absl::StatusOr<v1::LoadedAdapter> loaded = client_->LoadAdapter(*ref);
    if (!loaded.ok()) return Fail(loaded.status());
    if (json_) {
      Print(*loaded);
    } else {
      out_ << "loaded " << FormatAdapterRef(loaded->ref()) << " on " << loaded->base_model() << " ("
           << FormatBytes(loaded->memory_bytes()) << ")\n";
    }
    return kExitOk;
  }

  int Unload(const std::string& ref_text) {
    absl::StatusOr<v1::AdapterVersionRef> ref = ParseAdapterRef(ref_text);
    if (!ref.ok()) return Usage(ref.status().message());
    if (ref->version() == 0) return Usage("unload needs an explicit NAME:VERSION");
    absl::Status s = client_->UnloadAdapter(*ref);
    if (!s.ok()) return Fail(s);
    if (json_) {
      out_ << "{}\n";
    } else {
      out_ << "unloaded " << FormatAdapterRef(*ref) << "\n";
    }
    return kExitOk;
  }

  int Loaded() {
    absl::StatusOr<v1::ListLoadedAdaptersResponse> r = client_->ListLoadedAdapters();
    if (!r.ok()) return Fail(r.status());
    if (json_) {
      Print(*r);
      return kExitOk;
    }
    out_ << absl::StrFormat("%-28s %-16s %10s %6s %-20s %s\n", "ADAPTER", "BASE", "MEMORY",
                            "ACTIVE", "ALIASES", "LAST USED");
    for (const auto& a : r->adapters()) {
      out_ << absl::StrFormat("%-28s %-16s %10s %6d %-20s %s\n", FormatAdapterRef(a.ref()),
                              a.base_model(), FormatBytes(a.memory_bytes()), a.active_requests(),
                              a.aliases().empty() ? "-" : absl::StrJoin(a.aliases(), ","),
                              FormatTime(a.last_used_time()));
    }
    for (const auto& al : r->aliases()) {
      out_ << "alias " << al.alias() << " -> " << FormatAdapterRef(al.target()) << "\n";
    }
    out_ << "adapter memory: " << FormatBytes(r->adapter_memory_used_bytes()) << " of "
         << FormatBytes(r->adapter_memory_budget_bytes()) << "\n";
    return kExitOk;
  }

  int Alias(const Positional& p) {
    if (p.size() == 3 && p[0] == "set") return SetAlias(p[1], p[2]);
    if (p.size() == 2 && p[0] == "delete") return DeleteAlias(p[1]);
    return Usage("usage: oftctl alias set ALIAS NAME[:VERSION] | alias delete ALIAS");
  }

  int SetAlias(const std::string& alias, const std::string& ref_text) {
    absl::StatusOr<v1::AdapterVersionRef> ref = ParseAdapterRef(ref_text);
    if (!ref.ok()) return Usage(ref.status().message());
    absl::StatusOr<v1::Alias> a = client_->SetAlias(alias, *ref);
    if (!a.ok()) return Fail(a.status());
    if (json_) {
      Print(*a);
    } else {
      out_ << "alias " << a->alias() << " -> " << FormatAdapterRef(a->target());
      if (a->has_previous_target())
        out_ << " (was " << FormatAdapterRef(a->previous_target()) << ")";
      out_ << "\n";
    }
    return kExitOk;
  }

  int DeleteAlias(const std::string& alias) {
    absl::Status s = client_->DeleteAlias(alias);
    if (!s.ok()) return Fail(s);
    if (json_) {
      out_ << "{}\n";
    } else {
      out_ << "deleted alias " << alias << "\n";
    }
    return kExitOk;
  }

  const Args& args_;
  const CliEnv& env_;
  std::ostream& out_;
  std::ostream& err_;
  const bool json_;
  std::unique_ptr<Client> client_;
  int client_error_ = kExitRpcError;  // exit code when MakeClient leaves client_ null
};

}  // namespace

int RunOftctl(const std::vector<std::string>& argv, const CliEnv& env) {
  Args args;
  if (std::optional<UsageError> e = ParseArgs(argv, &args)) {
    *env.err << "oftctl: " << e->message << "\nRun 'oftctl --help' for usage.\n";
    return kExitUsage;
  }
  if (args.GetBool("help")) {
    *env.out << Cli::UsageText();
    return kExitOk;
  }
  if (args.GetBool("version")) {
    *env.out << "oftctl " << OFT_VERSION << "\n";
    return kExitOk;
  }
  if (args.positional.empty()) {
    *env.err << Cli::UsageText();
    return kExitUsage;
  }
  return Cli(args, env).Run();
}

}  // namespace oft
