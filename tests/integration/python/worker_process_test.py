#!/usr/bin/env python3
"""Jobs in supervised worker processes (oft_server --job_isolation=process, issue 12).

  worker_process_test.py OFT_SERVER REPO_ROOT

Through grpcio against a real server whose jobs train in oft_train_worker children:
  - a job trains in a child process (not the server's), publishes, and its adapter serves;
  - a worker that hangs (SIGSTOP, so no heartbeat) is killed after --worker_heartbeat_seconds
    and the job restarts from its checkpoint and succeeds;
  - SIGKILL of a worker mid-run: the job restarts from its checkpoint (a warning event says
    so) while a Generate stream keeps working; a second kill exhausts --worker_max_restarts=1
    and the job FAILS naming the signal;
  - cancel: the worker is gone within the grace period and the job is CANCELLED;
  - SIGKILL of the server: its worker exits by itself (parent-death signal), and a restarted
    server resumes the job from its checkpoint to SUCCEEDED;
  - event ids stay contiguous (every event stored once) through all of it.
Exits non-zero with a message naming the failed step.
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpcio_client_test as g  # noqa: E402

check, Failure = g.check, g.Failure
HEARTBEAT_S = 8  # a worker silent this long is killed as hung (start-up under load stays below)
FLAGS = ("--metrics_listen=", "--job_isolation=process", "--worker_max_restarts=1",
         "--worker_grace_seconds=20", f"--worker_heartbeat_seconds={HEARTBEAT_S}")


def workers_of(pid):
    """Pids of the oft_train_worker processes whose parent is `pid`."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"oft_train_worker" in cmd:
            out.append(int(d))
    return out


def all_workers():
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as fh:
                    if b"oft_train_worker" in fh.read().split(b"\0")[0]:
                        out.append(int(d))
            except OSError:
                pass
    return out


def kill_all(procs):
    """SIGKILLs and reaps the servers in `procs` that still run (a failed step leaves them)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_for(pred, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise Failure(f"timed out after {timeout} s waiting for {what}")


class Client:
    def __init__(self, port, repo):
        import grpc
        from oft.v1 import datasets_pb2, datasets_pb2_grpc, inference_pb2, inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc
        self.pb, self.ipb, self.dpb = jobs_pb2, inference_pb2, datasets_pb2
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.md = [("authorization", f"Bearer {g.API_KEY}")]
        self.jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.datasets = datasets_pb2_grpc.DatasetServiceStub(self.channel)
        self.inference = inference_pb2_grpc.InferenceServiceStub(self.channel)
        self.repo = repo

    def upload(self):
        with open(os.path.join(self.repo, "data", "sample", "train.jsonl"), "rb") as fh:
            data = fh.read()
        reqs = [self.dpb.UploadDatasetRequest(header=self.dpb.UploadDatasetHeader(
                    name="workers", sha256=g.sha256_bytes(data), size_bytes=len(data))),
                self.dpb.UploadDatasetRequest(chunk=data)]
        return self.datasets.UploadDataset(iter(reqs), timeout=60, metadata=self.md).id

    def create(self, ds, name, steps, every=2):
        spec = self.pb.JobSpec(base_model="default", training_dataset_ids=[ds], output_adapter_name=name,
                               hyperparameters=self.pb.Hyperparameters(
                                   max_steps=steps, batch_size=4, max_seq_len=128, learning_rate=5e-2,
                                   seed=3, checkpoint_every=every))
        return self.jobs.CreateJob(self.pb.CreateJobRequest(spec=spec), timeout=g.DEADLINE, metadata=self.md).id

    def get(self, job_id):
        return self.jobs.GetJob(self.pb.GetJobRequest(id=job_id), timeout=g.DEADLINE, metadata=self.md)

    def wait_state(self, job_id, states, timeout=300):
        names = {self.pb.Job.State.Value(s) for s in states}
        return wait_for(lambda: (lambda j: j if j.state in names else None)(self.get(job_id)),
                        f"job {job_id} in {states}", timeout)

    def events(self, job_id):
        out = list(self.jobs.WatchJob(self.pb.WatchJobRequest(id=job_id), timeout=g.JOB_DEADLINE, metadata=self.md))
        ids = [e.event_id for e in out]
        latest = self.get(job_id).latest_event_id
        check(len(ids) == latest, f"WatchJob returned {len(ids)} of {latest} events")
        check(ids == list(range(1, len(ids) + 1)), f"event ids not contiguous: {ids}")
        return out

    def generate(self, adapter=None):
        kw = {"text": "Question: What is 7 plus 5?\nAnswer:", "max_tokens": 8, "temperature": 0.0}
        if adapter is not None:
            kw["adapter_ref"] = adapter
        out = list(self.inference.Generate(self.ipb.GenerateRequest(**kw), timeout=60, metadata=self.md))
        return "".join(r.text_delta for r in out)


def run(server, repo, tmp):
    step = "start"
    g.generate_stubs(repo, tmp)
    proc, port, _ = g.start_server(server, repo, tmp, extra_flags=FLAGS)
    procs = [proc]
    try:
        c = Client(port, repo)
        ds = c.upload()

        step = "a job trains in a worker process and serves"
        job = c.create(ds, "wk", steps=4)
        wait_for(lambda: workers_of(proc.pid), "a worker child of the server")
        done = c.wait_state(job, ["SUCCEEDED", "FAILED", "CANCELLED"])
        check(done.state == c.pb.Job.SUCCEEDED, f"job ended {done.state}: {done.failure}")
        base = c.generate()
        tuned = c.generate(done.result)
        check(tuned != base, "the adapter trained in the worker changes nothing")
        wait_for(lambda: not workers_of(proc.pid), "the finished job's worker to exit", 30)

        step = "a hung worker (SIGSTOP: no heartbeat) is killed and the job restarts from its checkpoint"
        job = c.create(ds, "wk-hang", steps=10)
        wait_for(lambda: c.get(job).progress.step >= 3, "step 3")
        (pid,) = wait_for(lambda: workers_of(proc.pid), "the worker")
        stopped_at = time.time()
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: [p for p in workers_of(proc.pid) if p != pid], "the hung worker's replacement",
                 HEARTBEAT_S + 30)
        waited = time.time() - stopped_at
        # The last heartbeat may precede the stop by a second or two under load.
        check(waited >= HEARTBEAT_S - 3, f"replaced after {waited:.1f} s, long before the {HEARTBEAT_S} s heartbeat timeout")
        check(pid not in workers_of(proc.pid), "the hung worker is still a child of the server")
        check(c.generate() == base, "serving changed while a worker hung")
        done = c.wait_state(job, ["SUCCEEDED", "FAILED", "CANCELLED"])
        check(done.state == c.pb.Job.SUCCEEDED, f"job after the hang ended {done.state}: {done.failure}")
        hung = [e.warning.message for e in c.events(job) if e.WhichOneof("payload") == "warning"
                and "stopped sending heartbeats" in e.warning.message and "restarting" in e.warning.message]
        check(len(hung) == 1, f"hang restart warnings: {hung}")

        step = "a killed worker restarts from its checkpoint, then fails past max_restarts"
        job = c.create(ds, "wk-kill", steps=400)
        wait_for(lambda: c.get(job).progress.step >= 3, "step 3")
        (pid,) = wait_for(lambda: workers_of(proc.pid), "the worker")
        os.kill(pid, signal.SIGKILL)
        at_kill = c.get(job).progress.step
        check(c.generate() == base, "serving changed while a worker died")
        wait_for(lambda: [p for p in workers_of(proc.pid) if p != pid], "the restarted worker")
        wait_for(lambda: c.get(job).progress.step >= at_kill + 2, "progress after the restart")
        (pid2,) = workers_of(proc.pid)
        os.kill(pid2, signal.SIGKILL)
        failed = c.wait_state(job, ["FAILED", "SUCCEEDED", "CANCELLED"])
        check(failed.state == c.pb.Job.FAILED and "signal 9" in failed.failure.message,
              f"after 2 kills: {failed.state} {failed.failure}")
        events = c.events(job)
        restarts = [e for e in events if e.WhichOneof("payload") == "warning" and "restarting" in e.warning.message]
        check(len(restarts) == 1, f"restart warnings: {[e.warning.message for e in restarts]}")
        resumed = [e for e in events if e.WhichOneof("payload") == "warning"
                   and e.warning.kind == e.warning.RESUMED_FROM_CHECKPOINT]
        check(resumed, "the restarted worker did not resume from the checkpoint")

        step = "cancel stops the worker within the grace period"
        job = c.create(ds, "wk-cancel", steps=400)
        wait_for(lambda: c.get(job).progress.step >= 2, "step 2")
        (pid,) = workers_of(proc.pid)
        c.jobs.CancelJob(c.pb.CancelJobRequest(id=job), timeout=g.DEADLINE, metadata=c.md)
        # Well within --worker_grace_seconds=20: the worker honours SIGTERM (checkpoint, exit).
        cancelled = c.wait_state(job, ["CANCELLED", "FAILED", "SUCCEEDED"], timeout=10)
        check(cancelled.state == c.pb.Job.CANCELLED, f"cancel ended {cancelled.state}")
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
                 "the cancelled worker to exit", 10)

        step = "a killed server takes its worker along; the restarted server resumes the job"
        job = c.create(ds, "wk-orphan", steps=40)
        wait_for(lambda: c.get(job).progress.step >= 3, "step 3")
        (pid,) = workers_of(proc.pid)
        c.channel.close()
        proc.kill()
        proc.wait()
        wait_for(lambda: pid not in all_workers(), "the orphaned worker to exit", 30)
        os.remove(os.path.join(tmp, "port"))
        proc, port, _ = g.start_server(server, repo, tmp, extra_flags=FLAGS)
        procs.append(proc)
        c = Client(port, repo)
        done = c.wait_state(job, ["SUCCEEDED", "FAILED", "CANCELLED"])
        check(done.state == c.pb.Job.SUCCEEDED, f"resumed job ended {done.state}: {done.failure}")
        events = c.events(job)
        resumed = [e for e in events if e.WhichOneof("payload") == "warning"
                   and e.warning.kind == e.warning.RESUMED_FROM_CHECKPOINT]
        check(resumed, "the job did not resume from its checkpoint after the server restart: "
              + "; ".join(f"{e.WhichOneof('payload')}:{getattr(e, e.WhichOneof('payload'))}" for e in events
                          if e.WhichOneof("payload") != "step"))
        print("worker_process_test: OK")
        return 0
    except Failure as e:
        raise Failure(f"[{step}] {e}")
    finally:
        kill_all(procs)


def main():
    return g.run_main("worker_process_test.py", run)


if __name__ == "__main__":
    sys.exit(main())
