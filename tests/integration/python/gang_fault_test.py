#!/usr/bin/env python3
"""Faults of worker processes and ranks, with company (issue 12, "Worker faults", "Orphans").

  gang_fault_test.py OFT_SERVER REPO_ROOT

A CPU server with two CPU "devices" whose jobs train in worker processes
(--job_isolation=process --worker_max_restarts=1), through grpcio:
  - company: while Generate streams run back to back (two at a time) and a second job
    trains on the other device, a job's worker is aborted (SIGABRT; the job restarts from
    its checkpoint) and then SIGKILLed (restarts exhausted: the job FAILS naming signal 9).
    Every stream that was open across a fault returns the same text as before, without
    error, and the other job keeps its worker process and keeps training;
  - a 2-rank job whose ranks keep dying (SIGKILL of rank 1, then SIGABRT of rank 0)
    exhausts --worker_max_restarts: the job FAILS with a reason naming the rank and the
    signal, and no rank process remains;
  - SIGKILL of the server during a 2-rank job: both ranks exit by themselves, a restarted
    server on the same data dir resumes the job from its checkpoint to SUCCEEDED, no rank
    of it remains, and its event ids are contiguous (each event stored once).
Exits non-zero with a message naming the failed step.
"""
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gang_process_test as gp  # noqa: E402
import grpcio_client_test as g  # noqa: E402
import worker_process_test as w  # noqa: E402

check, Failure = g.check, g.Failure


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def workers_of_job(server_pid, job):
    """The live worker pids of `job` (its id is in the worker's --job= path)."""
    return [p for p in w.workers_of(server_pid) if job.encode() in cmdline(p) and not gp.gone(p)]


def workers_under(tmp):
    """Every live oft_train_worker of this test's data dir, whoever its parent is."""
    return [p for p in w.all_workers() if tmp.encode() in cmdline(p) and not gp.gone(p)]


class Streams:
    """Generate streams back to back on two threads (so that one is open at any moment);
    records (start, end, text, error) of each."""

    def __init__(self, c):
        self.c, self.runs, self.stop = c, [], threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(2)]

    def _loop(self):
        req = self.c.ipb.GenerateRequest(text="Question: What is 7 plus 5?\nAnswer:", max_tokens=48,
                                         temperature=0.0)
        while not self.stop.is_set():
            start, text, err = time.time(), "", None
            try:
                for r in self.c.inference.Generate(req, timeout=60, metadata=self.c.md):
                    text += r.text_delta
            except Exception as e:  # noqa: BLE001 - any error is a failure of the check below
                err = repr(e)
            self.runs.append((start, time.time(), text, err))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)

    def check_unharmed(self, base, fault_times):
        check(self.runs, "no Generate stream ran")
        bad = [r for r in self.runs if r[3] is not None or r[2] != base]
        check(not bad, f"{len(bad)} of {len(self.runs)} streams failed or changed: {bad[:2]} (want {base!r})")
        for t in fault_times:
            check(any(s <= t <= e for s, e, _, _ in self.runs), f"no stream was open at the fault at {t:.2f}")


def company(c, proc, ds):
    """A worker is aborted, then killed, while streams run and another job trains."""
    def wait(pred, what):  # fails at once, naming the server's exit, should the server die
        def live():
            check(proc.poll() is None, f"oft_server exited ({proc.returncode}) waiting for {what}")
            return pred()
        return w.wait_for(live, what)

    base = c.generate()
    check(base, "the base model generates nothing")
    other = gp.create(c, ds, "company", 4000, 1)
    victim = gp.create(c, ds, "victim", 4000, 1)
    w.wait_for(lambda: c.get(other).progress.step >= 1 and c.get(victim).progress.step >= 3, "both jobs to train")
    (other_pid,) = workers_of_job(proc.pid, other)
    faults = []
    with Streams(c) as streams:
        wait(lambda: streams.runs, "a first stream")
        for sig in (signal.SIGABRT, signal.SIGKILL):
            (pid,) = wait(lambda: workers_of_job(proc.pid, victim), "the victim's worker")
            other_step = c.get(other).progress.step
            faults.append(time.time())
            os.kill(pid, sig)
            if sig == signal.SIGABRT:
                wait(lambda: [p for p in workers_of_job(proc.pid, victim) if p != pid], "the restarted worker")
                at = c.get(victim).progress.step
                wait(lambda: c.get(victim).progress.step >= at + 1, "the victim's progress after the restart")
            wait(lambda: c.get(other).progress.step >= other_step + 2, "the other job's progress")
            check(workers_of_job(proc.pid, other) == [other_pid], "the other job's worker was replaced")
        time.sleep(1.0)  # a stream or two after the last fault
    streams.check_unharmed(base, faults)
    failed = c.wait_state(victim, ["FAILED", "SUCCEEDED", "CANCELLED"])
    check(failed.state == c.pb.Job.FAILED and "signal 9" in failed.failure.message
          and "after 1 restarts" in failed.failure.message, f"victim: {failed.state} {failed.failure}")
    events = c.events(victim)
    warnings = [e.warning.message for e in events if e.WhichOneof("payload") == "warning"]
    check(any("signal 6" in m and "restarting" in m for m in warnings), f"victim warnings: {warnings}")
    check(c.get(other).state == c.pb.Job.RUNNING, f"the other job is {c.get(other).state}")
    c.jobs.CancelJob(c.pb.CancelJobRequest(id=other), timeout=g.DEADLINE, metadata=c.md)
    check(c.wait_state(other, ["CANCELLED", "FAILED", "SUCCEEDED"]).state == c.pb.Job.CANCELLED,
          "the other job did not cancel cleanly")
    c.events(other)
    w.wait_for(lambda: not w.workers_of(proc.pid), "every worker to exit", 30)


def ranks_keep_dying(c, proc, ds):
    """Rank 1 SIGKILLed, then (after the restart) rank 0 aborted: FAILED, naming rank 0."""
    job = gp.create(c, ds, "gang-dying", 4000, 2)
    w.wait_for(lambda: c.get(job).progress.step >= 3, "step 3")
    ranks = gp.ranks_of(proc.pid, 2)
    os.kill(ranks[1], signal.SIGKILL)
    new = w.wait_for(lambda: (lambda p: p if len(p) == 2 and not set(p) & set(ranks.values()) else None)(
        workers_of_job(proc.pid, job)), "the restarted ranks")
    at = c.get(job).progress.step
    w.wait_for(lambda: c.get(job).progress.step >= at + 1, "progress after the restart")
    ranks2 = gp.ranks_of(proc.pid, 2)
    check(set(ranks2.values()) == set(new), "rank pids changed again")
    os.kill(ranks2[0], signal.SIGABRT)
    failed = c.wait_state(job, ["FAILED", "SUCCEEDED", "CANCELLED"])
    msg = failed.failure.message
    check(failed.state == c.pb.Job.FAILED, f"2-rank job after 2 deaths: {failed.state} {msg}")
    check("rank 0 of 2" in msg and "signal 6" in msg and "after 1 restarts" in msg, f"failure reason: {msg}")
    every = list(ranks.values()) + list(ranks2.values())
    w.wait_for(lambda: all(gp.gone(p) for p in every) and not w.workers_of(proc.pid), "no rank to remain", 30)
    warnings = [e.warning.message for e in c.events(job) if e.WhichOneof("payload") == "warning"]
    check(sum("rank 1 of 2" in m and "signal 9" in m and "restarting" in m for m in warnings) == 1,
          f"warnings: {warnings}")


def run(server, repo, tmp):
    step = "start"
    g.generate_stubs(repo, tmp)
    proc, port, _ = g.start_server(server, repo, tmp, extra_flags=gp.FLAGS)
    procs = [proc]
    try:
        c = w.Client(port, repo)
        ds = c.upload()

        step = "a worker aborts, then is killed, while streams run and another job trains"
        company(c, proc, ds)

        step = "a 2-rank job whose ranks keep dying exhausts --worker_max_restarts"
        ranks_keep_dying(c, proc, ds)

        step = "SIGKILL of the server during a 2-rank job; a restarted server resumes it"
        job = gp.create(c, ds, "gang-orphan", 100, 2)
        w.wait_for(lambda: c.get(job).progress.step >= 3, "step 3")
        ranks = gp.ranks_of(proc.pid, 2)
        c.channel.close()
        proc.kill()
        proc.wait()
        # PDEATHSIG: the ranks checkpoint and exit at once, long before they could finish the job.
        w.wait_for(lambda: all(gp.gone(p) for p in ranks.values()), "both orphaned ranks to exit", 10)
        published = os.path.join(tmp, "data", "adapters", "pytenant", "gang-orphan")
        check(not os.path.isdir(published) or not os.listdir(published),
              "the orphaned ranks went on training and published the adapter")
        check(not workers_under(tmp), f"workers left after the server died: {workers_under(tmp)}")
        os.remove(os.path.join(tmp, "port"))
        proc, port, _ = g.start_server(server, repo, tmp, extra_flags=gp.FLAGS)
        procs.append(proc)
        c = w.Client(port, repo)
        done = c.wait_state(job, ["SUCCEEDED", "FAILED", "CANCELLED"])
        check(done.state == c.pb.Job.SUCCEEDED, f"resumed 2-rank job ended {done.state}: {done.failure}")
        events = c.events(job)  # contiguous, each stored once, across both servers
        check(any(e.warning.kind == e.warning.RESUMED_FROM_CHECKPOINT for e in events
                  if e.WhichOneof("payload") == "warning"), "the job did not resume from its checkpoint")
        check(done.progress.step == 100, f"the resumed job stopped at step {done.progress.step} (want 100)")
        w.wait_for(lambda: not workers_under(tmp), "no rank to remain", 30)
        print("gang_fault_test: OK")
        return 0
    except Failure as e:
        raise Failure(f"[{step}] {e}")
    finally:
        w.kill_all(procs)


def main():
    return g.run_main("gang_fault_test.py", run)


if __name__ == "__main__":
    sys.exit(main())
