#!/usr/bin/env python3
"""Multi-device jobs through the real server (issue 12, "API and scheduling").

  gang_process_test.py OFT_SERVER REPO_ROOT

A CPU server with two CPU "devices" (--devices=cpu,cpu) whose jobs train in worker processes
(--job_isolation=process), through grpcio:
  - CreateJob rejects spec.num_devices=3 (more than the server has), naming the field;
  - a 2-device job runs as two oft_train_worker ranks (RANK 0 and 1, WORLD_SIZE=2, one
    MASTER_PORT), trains, publishes, and its adapter serves; its events are contiguous;
  - gang scheduling: while a 1-device job runs, a 2-device job waits ("waiting for 2
    devices, 1 free") and a 1-device job queued behind it does not take the free device;
  - SIGKILL of rank 1: both ranks stop, the job restarts from its checkpoint and succeeds;
  - cancel of a 2-rank job: both processes are gone within the grace period, CANCELLED.
Exits non-zero with a message naming the failed step.
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpcio_client_test as g  # noqa: E402
import worker_process_test as w  # noqa: E402

check, Failure = g.check, g.Failure
FLAGS = w.FLAGS + ("--devices=cpu,cpu",)


def environ_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as fh:
        pairs = [kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv]
    return {k.decode(): v.decode() for k, v in pairs}


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def create(c, ds, name, steps, devices):
    spec = c.pb.JobSpec(base_model="default", training_dataset_ids=[ds], output_adapter_name=name,
                        num_devices=devices,
                        hyperparameters=c.pb.Hyperparameters(
                            max_steps=steps, batch_size=2, max_seq_len=128, learning_rate=5e-2,
                            seed=3, checkpoint_every=2))
    return c.jobs.CreateJob(c.pb.CreateJobRequest(spec=spec), timeout=g.DEADLINE, metadata=c.md).id


def ranks_of(server_pid, n):
    """The n worker pids of the running job, by RANK."""
    pids = w.wait_for(lambda: (lambda p: p if len(p) == n else None)(w.workers_of(server_pid)),
                      f"{n} worker processes")
    return {int(environ_of(p)["RANK"]): p for p in pids}


def run(server, repo, tmp):
    import grpc
    step = "start"
    g.generate_stubs(repo, tmp)
    proc, port, _ = g.start_server(server, repo, tmp, extra_flags=FLAGS)
    try:
        c = w.Client(port, repo)
        ds = c.upload()

        step = "more devices than the server has"
        try:
            create(c, ds, "too-big", 4, 3)
            raise Failure("a 3-device job was accepted by a 2-device server")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.FAILED_PRECONDITION and "spec.num_devices" in e.details(),
                  f"3 devices: {e.code()} {e.details()}")

        step = "a 2-device job trains as two ranks, publishes and serves"
        job = create(c, ds, "gang", 6, 2)
        ranks = ranks_of(proc.pid, 2)
        check(sorted(ranks) == [0, 1], f"ranks {sorted(ranks)}")
        envs = [environ_of(ranks[r]) for r in (0, 1)]
        for r, env in enumerate(envs):
            check(env.get("WORLD_SIZE") == "2" and env.get("LOCAL_RANK") == str(r)
                  and env.get("MASTER_ADDR") == "127.0.0.1", f"rank {r} environment: {env}")
        check(envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"], "the ranks were given different ports")
        done = c.wait_state(job, ["SUCCEEDED", "FAILED", "CANCELLED"])
        check(done.state == c.pb.Job.SUCCEEDED, f"2-device job ended {done.state}: {done.failure}")
        check(done.spec.num_devices == 2, f"stored num_devices {done.spec.num_devices}")
        base = c.generate()
        check(c.generate(done.result) != base, "the 2-rank adapter changes nothing")
        c.events(job)  # contiguous, each once
        w.wait_for(lambda: not w.workers_of(proc.pid), "the ranks to exit", 30)

        step = "gang scheduling: a 2-device job waits for both devices, reserving the free one"
        one = create(c, ds, "one", 400, 1)
        w.wait_for(lambda: c.get(one).progress.step >= 1, "the 1-device job to train")
        gang = create(c, ds, "gang-wait", 40, 2)
        later = create(c, ds, "later", 2, 1)
        reason = w.wait_for(lambda: (lambda j: j.queue_reason if "1 free" in j.queue_reason else None)(c.get(gang)),
                            "the gang's queue reason")
        check(reason.startswith("waiting for 2 devices, 1 free"), f"queue_reason: {reason}")
        time.sleep(3)
        check(c.get(later).state == c.pb.Job.QUEUED, "a 1-device job behind the gang took the free device")
        check(len(w.workers_of(proc.pid)) == 1, "more than the first job's worker runs")
        c.jobs.CancelJob(c.pb.CancelJobRequest(id=one), timeout=g.DEADLINE, metadata=c.md)
        c.wait_state(gang, ["RUNNING"], timeout=60)

        step = "SIGKILL of rank 1 stops both ranks and restarts the job from its checkpoint"
        w.wait_for(lambda: c.get(gang).progress.step >= 3, "step 3")
        ranks = ranks_of(proc.pid, 2)
        os.kill(ranks[1], signal.SIGKILL)
        w.wait_for(lambda: gone(ranks[0]), "rank 0 to be stopped", 30)
        new = w.wait_for(lambda: (lambda p: p if len(p) == 2 and not set(p) & set(ranks.values()) else None)(
            w.workers_of(proc.pid)), "the restarted ranks")
        check(len(new) == 2, "restart")
        done = c.wait_state(gang, ["SUCCEEDED", "FAILED", "CANCELLED"])
        check(done.state == c.pb.Job.SUCCEEDED, f"restarted gang ended {done.state}: {done.failure}")
        events = c.events(gang)
        warnings = [e.warning.message for e in events if e.WhichOneof("payload") == "warning"]
        check(any("rank 1 of 2" in m and "restarting" in m for m in warnings), f"warnings: {warnings}")
        check(any(e.warning.kind == e.warning.RESUMED_FROM_CHECKPOINT for e in events
                  if e.WhichOneof("payload") == "warning"), "the group did not resume from the checkpoint")
        c.wait_state(later, ["SUCCEEDED"], timeout=300)

        step = "cancel of a 2-rank job stops both ranks within the grace period"
        job = create(c, ds, "gang-cancel", 400, 2)
        w.wait_for(lambda: c.get(job).progress.step >= 2, "step 2")
        ranks = ranks_of(proc.pid, 2)
        c.jobs.CancelJob(c.pb.CancelJobRequest(id=job), timeout=g.DEADLINE, metadata=c.md)
        cancelled = c.wait_state(job, ["CANCELLED", "FAILED", "SUCCEEDED"], timeout=20)
        check(cancelled.state == c.pb.Job.CANCELLED, f"cancel ended {cancelled.state}: {cancelled.failure}")
        w.wait_for(lambda: all(gone(p) for p in ranks.values()), "both ranks to exit", 5)
        print("gang_process_test: OK")
        return 0
    except Failure as e:
        raise Failure(f"[{step}] {e}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    return g.run_main("gang_process_test.py", run)


if __name__ == "__main__":
    sys.exit(main())
