#!/usr/bin/env python3
"""A real Prometheus (Debian's `prometheus`) scrapes a real oft_server.

  prometheus_scrape_test.py OFT_SERVER REPO_ROOT

Starts oft_server with a metrics port (--metrics_listen=127.0.0.1:0, --metrics_port_file) and
the HTTP API (--http_listen=127.0.0.1:0, whose /metrics serves the same registry), starts
Prometheus scraping both every second (jobs oft-server and oft-http), runs one short CPU job through a grpcio client
(stubs generated as in tests/integration/python/grpcio_client_test.py), then waits until
Prometheus' query API returns our series: oft_rpcs_total (CreateJob, OK), oft_jobs,
oft_rpc_duration_seconds_bucket, oft_train_step_seconds_count (one per step) and
oft_jobs_finished_total{state="SUCCEEDED"}, and from the HTTP port the same series plus
oft_http_requests_total for its own /metrics route. Every process it starts is killed on exit.
Exit 77 (ctest SKIP_RETURN_CODE) only when prometheus is not installed.
"""
import atexit
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

STEPS = 4
PROCS = []


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()


def fail(msg, logs=()):
    print(f"FAIL: {msg}", file=sys.stderr)
    for name, path in logs:
        if os.path.exists(path):
            with open(path, errors="replace") as fh:
                print(f"---- {name} (tail) ----\n{fh.read()[-3000:]}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_file(path, proc, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if os.path.exists(path):
            with open(path) as fh:
                text = fh.read().strip()
            if text:
                return int(text)
        time.sleep(0.1)
    raise RuntimeError(f"{what}: {path} not written within {timeout} s")


def query(web_port, expr):
    url = (f"http://127.0.0.1:{web_port}/api/v1/query?"
           + urllib.parse.urlencode({"query": expr}))
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"query {expr}: {body}")
    return body["data"]["result"]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: prometheus_scrape_test.py OFT_SERVER REPO_ROOT")
    server, repo = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    prom = shutil.which("prometheus")
    if not prom:
        print("SKIP: prometheus not installed (apt-get install prometheus; scripts/setup.sh does)")
        return 77
    import grpc  # after the skip check: only the skip may happen without grpcio
    import grpcio_client_test as g

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    tmp = tempfile.mkdtemp(prefix="oft-prom-")
    atexit.register(shutil.rmtree, tmp, True)
    server_log = os.path.join(tmp, "server.log")
    prom_log = os.path.join(tmp, "prometheus.log")
    logs = [("oft_server", server_log), ("prometheus", prom_log)]
    try:
        g.generate_stubs(repo, tmp)
        from oft.v1 import datasets_pb2, datasets_pb2_grpc, jobs_pb2, jobs_pb2_grpc

        mport_file = os.path.join(tmp, "metrics_port")
        hport_file = os.path.join(tmp, "http_port")
        proc, port, _ = g.start_server(server, repo, tmp, [
            "--metrics_listen=127.0.0.1:0", f"--metrics_port_file={mport_file}",
            "--http_listen=127.0.0.1:0", f"--http_port_file={hport_file}"])
        PROCS.append(proc)
        mport = wait_file(mport_file, proc, "oft_server (metrics port)")
        hport = wait_file(hport_file, proc, "oft_server (HTTP port)")
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
            text = r.read().decode()
        if "oft_queue_depth" not in text:
            fail(f"/metrics on {mport} lacks oft_queue_depth:\n{text[:2000]}", logs)

        web_port = free_port()
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as fh:
            fh.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                     "scrape_configs:\n  - job_name: oft-server\n    static_configs:\n"
                     f"      - targets: ['127.0.0.1:{mport}']\n"
                     "  - job_name: oft-http\n    static_configs:\n"
                     f"      - targets: ['127.0.0.1:{hport}']\n")
        plog = open(prom_log, "wb")
        pproc = subprocess.Popen(
            [prom, f"--config.file={cfg}", f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{web_port}", "--storage.tsdb.retention.time=1h"],
            stdout=plog, stderr=subprocess.STDOUT, cwd=tmp, preexec_fn=g.die_with_parent)
        PROCS.append(pproc)

        # One short job, so training and RPC series exist.
        md = [("authorization", f"Bearer {g.API_KEY}")]
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        with open(os.path.join(repo, "data", "sample", "train.jsonl"), "rb") as fh:
            data = fh.read()
        reqs = [datasets_pb2.UploadDatasetRequest(header=datasets_pb2.UploadDatasetHeader(
                    name="prom", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))),
                datasets_pb2.UploadDatasetRequest(chunk=data)]
        ds = datasets_pb2_grpc.DatasetServiceStub(channel).UploadDataset(
            iter(reqs), timeout=60, metadata=md)
        jobs = jobs_pb2_grpc.JobServiceStub(channel)
        job = jobs.CreateJob(jobs_pb2.CreateJobRequest(spec=jobs_pb2.JobSpec(
            base_model="default", training_dataset_ids=[ds.id], output_adapter_name="prom",
            hyperparameters=jobs_pb2.Hyperparameters(max_steps=STEPS, batch_size=4,
                                                     max_seq_len=128))),
            timeout=30, metadata=md)
        for _ in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id), timeout=300, metadata=md):
            pass
        job = jobs.GetJob(jobs_pb2.GetJobRequest(id=job.id), timeout=30, metadata=md)
        if job.state != jobs_pb2.Job.SUCCEEDED:
            fail(f"job ended {jobs_pb2.Job.State.Name(job.state)}: {job.failure}", logs)
        channel.close()

        # name -> predicate on the query result.
        def value(res):
            return sum(float(r["value"][1]) for r in res)
        want = {
            'up{job="oft-server"}': lambda r: value(r) == 1,
            'up{job="oft-http"}': lambda r: value(r) == 1,
            'oft_jobs_finished_total{job="oft-http",state="SUCCEEDED"}': lambda r: value(r) == 1,
            'oft_http_requests_total{job="oft-http",route="/metrics",method="GET",code="200"}':
                lambda r: value(r) >= 1,
            'oft_rpcs_total{method="/oft.v1.JobService/CreateJob",code="OK"}':
                lambda r: value(r) >= 1,
            'oft_rpc_duration_seconds_bucket{method="/oft.v1.JobService/GetJob",le="+Inf"}':
                lambda r: value(r) >= 1,
            'oft_jobs{job="oft-server",state="SUCCEEDED"}': lambda r: value(r) == 1,
            'oft_queue_depth{job="oft-server"}': lambda r: len(r) == 1 and value(r) == 0,
            "oft_train_step_seconds_count": lambda r: value(r) >= STEPS,
            'oft_jobs_finished_total{job="oft-server",state="SUCCEEDED"}': lambda r: value(r) == 1,
            'oft_jobs_created_total{job="oft-server"}': lambda r: value(r) == 1,
        }
        last = {}
        deadline = time.time() + 60
        while time.time() < deadline:
            if pproc.poll() is not None:
                fail(f"prometheus exited with {pproc.returncode}", logs)
            try:
                last = {e: query(web_port, e) for e in want}
            except OSError:
                time.sleep(0.5)  # not listening yet
                continue
            if all(pred(last[e]) for e, pred in want.items()):
                break
            time.sleep(0.5)
        else:
            bad = {e: last.get(e) for e, pred in want.items() if e not in last or not pred(last[e])}
            fail(f"Prometheus query API never returned the expected series: {bad}", logs)
        print(f"PASS: Prometheus scraped 127.0.0.1:{mport} and 127.0.0.1:{hport}; "
              + ", ".join(f"{e}={value(last[e]):g}" for e in want))
        return 0
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        fail(str(e), logs)


if __name__ == "__main__":
    sys.exit(main())
