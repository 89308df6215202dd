#!/usr/bin/env python3
"""A job's result does not depend on what else runs in the server (issue 12, "Reproducibility").

  reproducibility_test.py OFT_SERVER REPO_ROOT

A CPU server with two CPU "devices" (--devices=cpu,cpu), jobs in worker processes (no
--job_isolation flag: process isolation is the default, checked here), through grpcio:
  - job A trains alone: the sha256 of its adapter_model.safetensors and its losses;
  - the same spec (same seed and data, another output name) trains again while a different
    job (other seed, learning rate, batch size, sequence length) trains on the other device
    the whole time: the adapter bytes, the step losses reported and the eval loss of every
    other step are bitwise identical.
Then the same with --job_isolation=thread, where jobs share the server's process; that run
is recorded (printed), not required: thread mode documents no such guarantee.
Exits non-zero with a message naming the failed step.
"""
import hashlib
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpcio_client_test as g  # noqa: E402
import worker_process_test as w  # noqa: E402

check, Failure = g.check, g.Failure
BASE_FLAGS = ("--metrics_listen=", "--devices=cpu,cpu")
STEPS = 12


def create(c, ds, name, seed=11, lr=5e-2, batch=4, seq=128, steps=STEPS):
    spec = c.pb.JobSpec(base_model="default", training_dataset_ids=[ds], output_adapter_name=name,
                        num_devices=1, validation_fraction=0.2,
                        hyperparameters=c.pb.Hyperparameters(
                            max_steps=steps, batch_size=batch, max_seq_len=seq, learning_rate=lr,
                            seed=seed, checkpoint_every=4, eval_every=2))
    return c.jobs.CreateJob(c.pb.CreateJobRequest(spec=spec), timeout=g.DEADLINE, metadata=c.md).id


def outcome(c, tmp, job, name):
    """(sha256 of the adapter weights, final loss, {step: loss} of the step events (a few per
    second) and {-step: eval loss} of the evaluations (every other step))."""
    done = c.wait_state(job, ["SUCCEEDED", "FAILED", "CANCELLED"])
    check(done.state == c.pb.Job.SUCCEEDED, f"{name} ended {done.state}: {done.failure}")
    path = os.path.join(tmp, "data", "adapters", "pytenant", name, "1", "adapter_model.safetensors")
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    events = c.events(job)
    losses = {e.step.progress.step: e.step.metrics.loss for e in events if e.WhichOneof("payload") == "step"}
    losses.update({-e.eval.step: e.eval.eval_loss for e in events if e.WhichOneof("payload") == "eval"})
    return digest, done.metrics.loss, losses


def compare(alone, busy):
    """'' when bitwise equal, else what differs."""
    diffs = []
    if alone[0] != busy[0]:
        diffs.append(f"adapter sha256 {alone[0][:16]} alone vs {busy[0][:16]} with company")
    if alone[1] != busy[1]:
        diffs.append(f"final loss {alone[1]!r} alone vs {busy[1]!r} with company")
    common = sorted(set(alone[2]) & set(busy[2]))
    bad = [(s, alone[2][s], busy[2][s]) for s in common if alone[2][s] != busy[2][s]]
    if bad:
        diffs.append(f"losses differ at {len(bad)} of {len(common)} steps, first {bad[0]}")
    return "; ".join(diffs)


def one_mode(server, repo, tmp, mode):
    """Runs A alone, then A again beside another job; returns the difference ('' = none)."""
    data = os.path.join(tmp, "data")
    shutil.rmtree(data, ignore_errors=True)
    port_file = os.path.join(tmp, "port")
    if os.path.exists(port_file):
        os.remove(port_file)
    # Process mode is the default: no flag for it.
    flags = BASE_FLAGS + (() if mode == "process" else (f"--job_isolation={mode}",))
    proc, port, _ = g.start_server(server, repo, tmp, extra_flags=flags)
    try:
        c = w.Client(port, repo)
        ds = c.upload()
        alone = outcome(c, tmp, create(c, ds, "a-alone"), "a-alone")
        check(sum(k < 0 for k in alone[2]) == STEPS // 2, f"{mode}: evaluations at {sorted(alone[2])}")
        other = create(c, ds, "other", seed=99, lr=2e-2, batch=2, seq=96, steps=100000)
        w.wait_for(lambda: c.get(other).progress.step >= 2, f"{mode}: the other job to train")
        workers = w.workers_of(proc.pid)
        check(len(workers) == (1 if mode == "process" else 0), f"{mode}: worker processes {workers}")
        busy_job = create(c, ds, "a-busy")
        busy = outcome(c, tmp, busy_job, "a-busy")
        check(c.get(other).state == c.pb.Job.RUNNING, f"{mode}: the other job stopped before A finished")
        c.jobs.CancelJob(c.pb.CancelJobRequest(id=other), timeout=g.DEADLINE, metadata=c.md)
        c.wait_state(other, ["CANCELLED"])
        diff = compare(alone, busy)
        print(f"reproducibility_test: {mode}: adapter sha256 alone {alone[0]}, with company {busy[0]}; "
              f"{len(set(alone[2]) & set(busy[2]))} train/eval losses compared: "
              + ("bitwise identical" if not diff else "DIFFERENT: " + diff))
        c.channel.close()
        g.stop_server(proc)
        return diff
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run(server, repo, tmp):
    step = "start"
    g.generate_stubs(repo, tmp)
    try:
        step = "process isolation: A alone == A beside another job, bitwise"
        diff = one_mode(server, repo, tmp, "process")
        check(not diff, diff)
        step = "thread isolation (recorded)"
        one_mode(server, repo, tmp, "thread")
        print("reproducibility_test: OK")
        return 0
    except Failure as e:
        raise Failure(f"[{step}] {e}")


def main():
    return g.run_main("reproducibility_test.py", run)


if __name__ == "__main__":
    sys.exit(main())
