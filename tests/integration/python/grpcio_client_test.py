#!/usr/bin/env python3
"""An independent client: Python grpcio (PyPI) drives a real oft_server through a job.

  grpcio_client_test.py OFT_SERVER REPO_ROOT

Stubs are generated here from proto/ (the files in proto/protos.txt) with grpcio-tools, so
the test sees the API only as any third-party client would. Standard grpc.health.v1 and
grpc.reflection.v1alpha are reached through hand-written copies of their public protos.

Flow: start oft_server on 127.0.0.1:0 (--port_file) with an API key and a temp --data_dir;
no key -> UNAUTHENTICATED; ListBaseModels; upload data/sample/train.jsonl; CreateJob (6 steps,
batch 4, seq 128); WatchJob to SUCCEEDED (event ids 1..n without gaps); download the adapter
and check every file's sha256 against its header and the manifest; health (no credentials,
as Kubernetes probes call it) and reflection; SIGTERM -> exit 0.
Exits non-zero with a message naming the failed step.
"""
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

try:
    import grpc
    import grpc_tools
    from grpc_tools import protoc
except ImportError as e:  # scripts/setup.sh installs them into .venv
    sys.exit(f"FAIL: grpcio / grpcio-tools not importable ({e}); run scripts/setup.sh")

API_KEY = "py-interop-key-0123456789abcdef"
DEADLINE = 30.0        # seconds, every unary call
JOB_DEADLINE = 300.0   # seconds, the whole WatchJob stream

HEALTH_PROTO = """
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"""

REFLECTION_PROTO = """
syntax = "proto3";
package grpc.reflection.v1alpha;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    ExtensionRequest file_containing_extension = 5;
    string all_extension_numbers_of_type = 6;
    string list_services = 7;
  }
}
message ExtensionRequest { string containing_type = 1; int32 extension_number = 2; }
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ExtensionNumberResponse all_extension_numbers_response = 5;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ExtensionNumberResponse { string base_type_name = 1; repeated int32 extension_number = 2; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
"""


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def generate_stubs(repo, out):
    """Runs grpc_tools.protoc over proto/protos.txt and the two hand-written protos."""
    with open(os.path.join(repo, "proto", "protos.txt")) as fh:
        protos = [l.strip() for l in fh if l.strip() and not l.lstrip().startswith("#")]
    check(protos, "proto/protos.txt lists no files")
    extra = os.path.join(out, "extra_protos")
    # Flat file names: a generated "grpc/..." module tree would collide with the grpc package.
    os.makedirs(extra)
    for rel, text in (("grpc_health_v1.proto", HEALTH_PROTO),
                      ("grpc_reflection_v1alpha.proto", REFLECTION_PROTO)):
        with open(os.path.join(extra, rel), "w") as fh:
            fh.write(text)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    gen = os.path.join(out, "gen")
    os.makedirs(gen)
    for include, files in ((os.path.join(repo, "proto"), protos),
                           (extra, ["grpc_health_v1.proto", "grpc_reflection_v1alpha.proto"])):
        args = ["protoc", f"-I{include}", f"-I{well_known}", f"--python_out={gen}",
                f"--grpc_python_out={gen}"] + [os.path.join(include, f) for f in files]
        rc = protoc.main(args)
        check(rc == 0, f"grpc_tools.protoc failed ({rc}) on {files}")
    sys.path.insert(0, gen)


def die_with_parent():
    """preexec_fn: the child gets SIGKILL when this test process dies (e.g. a ctest timeout)."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_server(server, repo, tmp, extra_flags=("--metrics_listen=",)):
    """Starts oft_server on 127.0.0.1:0; returns (Popen, grpc port, log path)."""
    port_file = os.path.join(tmp, "port")
    log_path = os.path.join(tmp, "server.log")
    cmd = [server, "--listen=127.0.0.1:0", f"--port_file={port_file}",
           f"--data_dir={os.path.join(tmp, 'data')}",
           f"--model=default={os.path.join(repo, 'models', 'default')}",
           f"--api_key=pytenant:{API_KEY}", "--devices=cpu", "--train_threads=1"]
    cmd += list(extra_flags)
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise Failure(f"oft_server exited with {proc.returncode} before serving")
        if os.path.exists(port_file):
            with open(port_file) as fh:
                text = fh.read().strip()
            if text:
                return proc, int(text), log_path
        time.sleep(0.1)
    raise Failure("oft_server did not write --port_file within 120 s")


@contextlib.contextmanager
def serving(server, repo, tmp, extra_flags=("--metrics_listen=",)):
    """start_server, then a ready channel to it: yields (Popen, channel); the server is killed
    on the way out unless the body stopped it."""
    proc, port, _ = start_server(server, repo, tmp, extra_flags)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield proc, channel
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_server(proc):
    """SIGTERM; the server must exit 0 within 60 s."""
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    check(rc == 0, f"oft_server exited {rc} on SIGTERM (want 0)")


def run(server, repo, tmp):
    step = "generate stubs"
    generate_stubs(repo, tmp)
    from oft.v1 import adapters_pb2, adapters_pb2_grpc, datasets_pb2, datasets_pb2_grpc
    from oft.v1 import jobs_pb2, jobs_pb2_grpc, models_pb2, models_pb2_grpc
    import grpc_health_v1_pb2 as health_pb2
    import grpc_health_v1_pb2_grpc as health_pb2_grpc
    import grpc_reflection_v1alpha_pb2 as reflection_pb2
    import grpc_reflection_v1alpha_pb2_grpc as reflection_pb2_grpc
    from google.protobuf import descriptor_pb2

    proc, port, _ = start_server(server, repo, tmp)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        md = [("authorization", f"Bearer {API_KEY}")]
        jobs = jobs_pb2_grpc.JobServiceStub(channel)
        datasets = datasets_pb2_grpc.DatasetServiceStub(channel)
        adapters = adapters_pb2_grpc.AdapterServiceStub(channel)
        models = models_pb2_grpc.ModelServiceStub(channel)

        step = "auth"
        for bad_md in ([], [("authorization", "Bearer wrong-key")]):
            try:
                jobs.ListJobs(jobs_pb2.ListJobsRequest(), timeout=DEADLINE, metadata=bad_md)
                raise Failure(f"ListJobs with metadata {bad_md} succeeded")
            except grpc.RpcError as e:
                check(e.code() == grpc.StatusCode.UNAUTHENTICATED,
                      f"ListJobs with metadata {bad_md}: {e.code()} (want UNAUTHENTICATED)")

        step = "ListBaseModels"
        resp = models.ListBaseModels(models_pb2.ListBaseModelsRequest(), timeout=DEADLINE,
                                     metadata=md)
        names = [m.name for m in resp.models]
        check("default" in names, f"ListBaseModels: {names} lacks 'default'")

        step = "UploadDataset"
        with open(os.path.join(repo, "data", "sample", "train.jsonl"), "rb") as fh:
            data = fh.read()
        digest = sha256_bytes(data)

        def upload_requests():
            yield datasets_pb2.UploadDatasetRequest(header=datasets_pb2.UploadDatasetHeader(
                name="py-sample", sha256=digest, size_bytes=len(data)))
            for i in range(0, len(data), 64 * 1024):
                yield datasets_pb2.UploadDatasetRequest(chunk=data[i:i + 64 * 1024])

        ds = datasets.UploadDataset(upload_requests(), timeout=60, metadata=md)
        check(ds.id and ds.sha256 == digest and ds.size_bytes == len(data),
              f"UploadDataset returned {ds}")
        check(ds.validation.rows > 0, f"dataset has {ds.validation.rows} rows")

        step = "CreateJob"
        spec = jobs_pb2.JobSpec(
            base_model="default", training_dataset_ids=[ds.id],
            output_adapter_name="py-interop",
            hyperparameters=jobs_pb2.Hyperparameters(max_steps=6, batch_size=4, max_seq_len=128,
                                                     learning_rate=1e-3, seed=7))
        job = jobs.CreateJob(jobs_pb2.CreateJobRequest(idempotency_key="py-1", spec=spec),
                             timeout=DEADLINE, metadata=md)
        check(job.id and job.state in (jobs_pb2.Job.QUEUED, jobs_pb2.Job.RUNNING),
              f"CreateJob returned state {job.state}")
        again = jobs.CreateJob(jobs_pb2.CreateJobRequest(idempotency_key="py-1", spec=spec),
                               timeout=DEADLINE, metadata=md)
        check(again.id == job.id, f"idempotent retry gave {again.id}, not {job.id}")

        step = "WatchJob"
        ids, last_state, steps = [], None, 0
        for ev in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id), timeout=JOB_DEADLINE,
                                metadata=md):
            check(ev.job_id == job.id, f"event for {ev.job_id}")
            ids.append(ev.event_id)
            kind = ev.WhichOneof("payload")
            if kind == "state_changed":
                last_state = ev.state_changed.state
                if last_state == jobs_pb2.Job.FAILED:
                    raise Failure(f"job FAILED: {ev.state_changed.failure}")
            elif kind == "step":
                steps = max(steps, ev.step.progress.step)
        check(ids == list(range(1, len(ids) + 1)), f"event ids not 1..n: {ids}")
        check(last_state == jobs_pb2.Job.SUCCEEDED,
              f"stream ended in state {jobs_pb2.Job.State.Name(last_state or 0)}")
        check(steps == 6, f"last step event reports step {steps}, want 6")

        step = "GetJob"
        job = jobs.GetJob(jobs_pb2.GetJobRequest(id=job.id), timeout=DEADLINE, metadata=md)
        check(job.state == jobs_pb2.Job.SUCCEEDED, f"GetJob state {job.state}")
        check(job.result.name == "py-interop" and job.result.version >= 1,
              f"GetJob result {job.result}")
        check(job.latest_event_id == ids[-1], f"latest_event_id {job.latest_event_id} != {ids[-1]}")
        listed = jobs.ListJobs(jobs_pb2.ListJobsRequest(states=[jobs_pb2.Job.SUCCEEDED]),
                               timeout=DEADLINE, metadata=md)
        check([j.id for j in listed.jobs] == [job.id], f"ListJobs(SUCCEEDED) = {listed.jobs}")

        step = "GetAdapter / DownloadAdapter"
        manifest = adapters.GetAdapter(adapters_pb2.GetAdapterRequest(ref=job.result),
                                       timeout=DEADLINE, metadata=md)
        want = {f.name: f for f in manifest.files}
        check("adapter_model.safetensors" in want and "adapter_config.json" in want,
              f"adapter files {sorted(want)}")
        check(manifest.job_id == job.id, f"manifest job_id {manifest.job_id}")
        files, current = {}, None
        for msg in adapters.DownloadAdapter(adapters_pb2.DownloadAdapterRequest(ref=job.result),
                                            timeout=60, metadata=md):
            if msg.WhichOneof("payload") == "file_header":
                current = msg.file_header
                check(current.name not in files, f"file {current.name} sent twice")
                files[current.name] = [current, bytearray()]
            else:
                check(current is not None, "chunk before any file header")
                files[current.name][1] += msg.chunk
        check(set(want) <= set(files), f"downloaded {sorted(files)}, manifest {sorted(want)}")
        # manifest.json cannot hold its own hash; Adapter.files may or may not list it.
        check(set(files) - set(want) <= {"manifest.json"},
              f"downloaded {sorted(files)}, manifest {sorted(want)}")
        for name, (hdr, body) in files.items():
            got = sha256_bytes(bytes(body))
            check(len(body) == hdr.size_bytes, f"{name}: {len(body)} bytes, header {hdr.size_bytes}")
            check(got == hdr.sha256, f"{name}: sha256 {got}, header {hdr.sha256}")
            if name in want:
                check(got == want[name].sha256,
                      f"{name}: sha256 {got}, manifest {want[name].sha256}")
        cfg = json.loads(bytes(files["adapter_config.json"][1]))
        check(cfg.get("peft_type") == "OFT", f"adapter_config.json peft_type {cfg.get('peft_type')}")
        st = bytes(files["adapter_model.safetensors"][1])
        hlen = int.from_bytes(st[:8], "little")
        tensors = json.loads(st[8:8 + hlen])
        check(any(".oft_" in k for k in tensors),
              f"safetensors holds no OFT tensors: {sorted(tensors)[:5]}")

        step = "Generate (InferenceService)"
        from oft.v1 import inference_pb2, inference_pb2_grpc
        inference = inference_pb2_grpc.InferenceServiceStub(channel)

        def generate(**kw):
            req = inference_pb2.GenerateRequest(text="Question: What is 7 plus 5?\nAnswer:",
                                                max_tokens=12, temperature=0.0, **kw)
            out = list(inference.Generate(req, timeout=60, metadata=md))
            check(out, "Generate streamed no response")
            check(out[-1].finish_reason != inference_pb2.GenerateResponse.FINISH_REASON_UNSPECIFIED,
                  "last Generate response has no finish_reason")
            tokens = [t for r in out for t in r.token_ids]
            check(out[-1].usage.completion_tokens == len(tokens),
                  f"usage.completion_tokens {out[-1].usage.completion_tokens} != {len(tokens)}")
            return out, tokens

        base, base_tokens = generate()
        check(not base[0].HasField("served_by"), f"base request served by {base[0].served_by}")
        tuned, tuned_tokens = generate(adapter_ref=job.result)
        check(tuned[0].served_by.name == job.result.name
              and tuned[0].served_by.version == job.result.version,
              f"served_by {tuned[0].served_by}, want {job.result}")
        _, again = generate(adapter_ref=job.result)
        check(again == tuned_tokens, "greedy generation with the adapter is not reproducible")
        alias = inference.SetAlias(inference_pb2.SetAliasRequest(alias="prod", target=job.result),
                                   timeout=60, metadata=md)
        check(alias.target.version == job.result.version, f"SetAlias target {alias.target}")
        via_alias, alias_tokens = generate(alias="prod")
        check(alias_tokens == tuned_tokens, "the alias serves other tokens than its version")
        try:
            generate(adapter_ref=type(job.result)(name="nope", version=1))
            raise Failure("Generate with an unknown adapter succeeded")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, f"unknown adapter: {e.code()}")

        step = "health"
        health = health_pb2_grpc.HealthStub(channel)
        for svc in ("", "oft.v1.JobService"):
            r = health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=DEADLINE)
            check(r.status == health_pb2.HealthCheckResponse.SERVING,
                  f"health({svc!r}) = {r.status} (called without credentials, as a k8s probe)")

        step = "reflection"
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="oft.v1.JobService")]
        resps = list(refl.ServerReflectionInfo(iter(reqs), timeout=DEADLINE, metadata=md))
        check(len(resps) == 2, f"reflection answered {len(resps)} of 2 requests")
        services = [s.name for s in resps[0].list_services_response.service]
        for svc in ("oft.v1.JobService", "oft.v1.DatasetService", "oft.v1.AdapterService",
                    "oft.v1.ModelService", "grpc.health.v1.Health"):
            check(svc in services, f"reflection lists {services}, not {svc}")
        methods = set()
        for raw in resps[1].file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for s in fd.service:
                if fd.package == "oft.v1" and s.name == "JobService":
                    methods = {m.name for m in s.method}
        check({"CreateJob", "WatchJob", "GetJob", "ListJobs", "CancelJob"} <= methods,
              f"reflected JobService methods {sorted(methods)}")
        channel.close()

        step = "SIGTERM"
        stop_server(proc)
        print(f"PASS: grpcio {grpc.__version__} client: job {job.id} SUCCEEDED in {len(ids)} "
              f"events; adapter {job.result.name} v{job.result.version} "
              f"({len(files)} files) verified; health + reflection OK")
        return 0
    except (Failure, grpc.RpcError) as e:
        what = f"RPC failed: {e.code()} {e.details()}" if isinstance(e, grpc.RpcError) else str(e)
        time.sleep(0.2)
        if step != "SIGTERM" and proc.poll() is not None:
            what += f" (oft_server died, exit status {proc.returncode})"
        raise Failure(f"[{step}] {what}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_main(name, run_fn):
    """main() of a client test: `name OFT_SERVER REPO_ROOT`; runs run_fn(server, repo, tmp) in a
    temporary directory and reports any failure with the tail of the server's log."""
    if len(sys.argv) != 3:
        sys.exit(f"usage: {name} OFT_SERVER REPO_ROOT")
    server, repo = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix=f"oft-{name.split('_')[0]}-") as tmp:
        try:
            return run_fn(server, repo, tmp)
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            print(f"FAIL: {e}", file=sys.stderr)
            if not isinstance(e, Failure):
                traceback.print_exc()
            log = os.path.join(tmp, "server.log")
            if os.path.exists(log):
                with open(log, errors="replace") as fh:
                    tail = fh.read()[-4000:]
                print("---- oft_server log (tail) ----\n" + tail, file=sys.stderr)
            return 1


def main():
    return run_main("grpcio_client_test.py", run)


if __name__ == "__main__":
    sys.exit(main())
