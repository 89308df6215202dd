#!/usr/bin/env python3
"""Files and fine-tuning jobs through the official `openai` Python client (issue 14).

  openai_fine_tuning_test.py OFT_SERVER REPO_ROOT

Starts oft_server with --http_listen and two tenants' keys, then through client.files and
client.fine_tuning.jobs only (no gRPC):
  - upload data/sample/train.jsonl (multipart, purpose "fine-tune"); list and retrieve it;
    a bad row names its line, a wrong purpose names `purpose`, an oversized file is 413;
  - create a job (method.oft hyperparameters), list its events while it trains, reach
    "succeeded", read its checkpoints, then chat with fine_tuned_model through `model`;
  - list jobs with limit/after; cancel a long job -> "cancelled";
  - errors name `param`: an unknown model, a bad n_epochs, an unknown training_file;
  - the other tenant gets 404 for the files, jobs and adapter; a deleted file is gone.
Exits non-zero with a message naming the failed step.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpcio_client_test as g  # noqa: E402  (start_server, check, Failure, run_main)
import openai_api_test as oa  # noqa: E402  (http_port, raw)

try:
    import openai
except ImportError as e:  # scripts/setup.sh installs it into .venv
    sys.exit(f"FAIL: openai not importable ({e}); run scripts/setup.sh")

check, Failure = g.check, g.Failure
OTHER_KEY = "other-tenant-key-0123456789"
MAX_UPLOAD = 60000  # data/sample/train.jsonl is ~40 kB


def expect_error(fn, err, param=None, needle=None):
    try:
        fn()
    except err as e:
        body = e.body if isinstance(e.body, dict) else {}
        if param is not None:
            check(body.get("param") == param, f"param {body.get('param')!r} != {param!r}: {e}")
        if needle is not None:
            check(needle in str(e), f"error {e} does not mention {needle!r}")
        return e
    raise Failure(f"expected {err.__name__}, the call succeeded")


def wait_job(client, job_id, states, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in states:
            return job
        time.sleep(0.2)
    raise Failure(f"job {job_id} not in {states} after {timeout} s (last {job.status})")


def run(server, repo, tmp):
    step = "start"
    proc, _, _ = g.start_server(server, repo, tmp, extra_flags=(
        "--metrics_listen=", "--http_listen=127.0.0.1:0", f"--http_port_file={os.path.join(tmp, 'http_port')}",
        f"--api_key=othertenant:{OTHER_KEY}", f"--max_upload_bytes={MAX_UPLOAD}"))
    try:
        hport = oa.http_port(tmp)
        base = f"http://127.0.0.1:{hport}/v1"
        client = openai.OpenAI(base_url=base, api_key=g.API_KEY, max_retries=0, timeout=120)
        other = openai.OpenAI(base_url=base, api_key=OTHER_KEY, max_retries=0, timeout=120)
        train_path = os.path.join(repo, "data", "sample", "train.jsonl")

        step = "files.create / list / retrieve"
        with open(train_path, "rb") as fh:
            f = client.files.create(file=fh, purpose="fine-tune")
        check(f.object == "file" and f.purpose == "fine-tune", f"file object {f}")
        check(f.bytes == os.path.getsize(train_path), f"bytes {f.bytes}")
        check(f.filename == "train.jsonl", f"filename {f.filename}")
        check(f.id in [x.id for x in client.files.list()], "files.list lacks the upload")
        check(client.files.retrieve(f.id).bytes == f.bytes, "files.retrieve")

        step = "files: bad input"
        bad_rows = b'{"prompt": "a", "completion": "b"}\n{"prompt": 3}\n'
        expect_error(lambda: client.files.create(file=("bad.jsonl", bad_rows), purpose="fine-tune"),
                     openai.BadRequestError, param="file", needle="line 2")
        expect_error(lambda: client.files.create(file=("x.jsonl", b'{"text": "hi"}\n'), purpose="assistants"),
                     openai.BadRequestError, param="purpose")
        e = expect_error(lambda: client.files.create(file=("big.jsonl", b"x" * (MAX_UPLOAD + 1)), purpose="fine-tune"),
                         openai.APIStatusError)
        check(e.status_code == 413, f"oversized upload: {e.status_code} {e}")

        step = "fine_tuning.jobs.create"
        oft = {"hyperparameters": {"max_steps": 3, "batch_size": 4, "max_seq_len": 128,
                                   "learning_rate_multiplier": 500, "checkpoint_every": 1}}
        job = client.fine_tuning.jobs.create(model="default", training_file=f.id, suffix="oai-ft", seed=3,
                                             method={"type": "oft", "oft": oft})
        check(job.object == "fine_tuning.job" and job.model == "default", f"job object {job}")
        check(job.status in ("queued", "running"), f"new job status {job.status}")
        check(job.training_file == f.id and job.seed == 3, f"job fields {job}")
        check(abs(job.hyperparameters.learning_rate_multiplier - 500) < 1e-6, f"hyperparameters {job.hyperparameters}")

        step = "events while training"
        seen_running, events = False, []
        deadline = time.time() + 300
        while time.time() < deadline:
            cur = client.fine_tuning.jobs.retrieve(job.id)
            events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
            seen_running |= cur.status == "running"
            if cur.status in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.1)
        check(cur.status == "succeeded", f"job ended {cur.status}: {cur.error}")
        check(all(ev.object == "fine_tuning.job.event" for ev in events), "event objects")
        check(events[0].message.startswith("Job succeeded"), f"newest event: {events[0].message}")
        ids = [int(ev.id.rsplit("-", 1)[1]) for ev in events]
        check(ids == sorted(ids, reverse=True), f"events not newest first: {ids}")
        metrics = [ev for ev in events if ev.type == "metrics"]
        check(len(metrics) >= 2 and metrics[0].data["step"] == 3 and "train_loss" in metrics[0].data,
              f"metrics events: {metrics}")
        page = client.fine_tuning.jobs.list_events(job.id, limit=2)
        check(len(page.data) == 2 and page.has_more, f"first page: {page}")
        rest = client.fine_tuning.jobs.list_events(job.id, limit=100, after=page.data[-1].id).data
        check([ev.id for ev in rest] == [ev.id for ev in events[2:]], "after= does not continue the listing")

        step = "checkpoints"
        ckpts = client.fine_tuning.jobs.checkpoints.list(job.id).data
        check([c.step_number for c in ckpts] == [3, 2, 1], f"checkpoint steps {[c.step_number for c in ckpts]}")
        check(all(c.fine_tuning_job_id == job.id for c in ckpts), "checkpoint job ids")

        step = "chat with fine_tuned_model"
        check(cur.fine_tuned_model == "oai-ft:1", f"fine_tuned_model {cur.fine_tuned_model}")
        messages = [{"role": "user", "content": "What is 7 plus 5?"}]
        tuned = client.chat.completions.create(model=cur.fine_tuned_model, messages=messages, max_tokens=8,
                                               temperature=0)
        check(tuned.model == cur.fine_tuned_model and tuned.choices[0].message.content, f"chat: {tuned}")
        prompt = "Question: What is 7 plus 5?\nAnswer:"
        base_c = client.completions.create(model="default", prompt=prompt, max_tokens=12, temperature=0)
        tuned_c = client.completions.create(model="oai-ft", prompt=prompt, max_tokens=12, temperature=0)
        check(base_c.choices[0].text != tuned_c.choices[0].text, "the fine-tuned adapter changes nothing")

        step = "jobs.list / cancel"
        long_job = client.fine_tuning.jobs.create(
            model="default", training_file=f.id, suffix="long",
            method={"type": "oft", "oft": {"hyperparameters": {"max_steps": 100000, "batch_size": 4,
                                                               "max_seq_len": 128}}})
        listed = client.fine_tuning.jobs.list(limit=1)
        check([j.id for j in listed.data] == [long_job.id] and listed.has_more, f"jobs.list(limit=1): {listed}")
        after = client.fine_tuning.jobs.list(limit=10, after=long_job.id)
        check([j.id for j in after.data] == [job.id] and not after.has_more, f"jobs.list(after=): {after}")
        wait_job(client, long_job.id, ("running",))
        client.fine_tuning.jobs.cancel(long_job.id)
        done = wait_job(client, long_job.id, ("cancelled", "failed", "succeeded"))
        check(done.status == "cancelled", f"cancelled job ended {done.status}")

        step = "errors name param"
        expect_error(lambda: client.fine_tuning.jobs.create(model="no-such-base", training_file=f.id),
                     openai.APIStatusError, param="model")
        expect_error(lambda: client.fine_tuning.jobs.create(model="default", training_file=f.id,
                                                            hyperparameters={"n_epochs": 0}),
                     openai.BadRequestError, param="hyperparameters.n_epochs")
        expect_error(lambda: client.fine_tuning.jobs.create(model="default", training_file="ds-nope"),
                     openai.NotFoundError, param="training_file")
        expect_error(lambda: client.fine_tuning.jobs.create(model="default", training_file=f.id,
                                                            method={"type": "dpo"}),
                     openai.BadRequestError, param="method.type")
        status, body = oa.raw(hport, "POST", "/v1/fine_tuning/jobs", body=b"{nope")
        check(status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error", f"{status} {body}")

        step = "tenancy"
        expect_error(lambda: other.files.retrieve(f.id), openai.NotFoundError)
        expect_error(lambda: other.files.delete(f.id), openai.NotFoundError)
        expect_error(lambda: other.fine_tuning.jobs.retrieve(job.id), openai.NotFoundError)
        expect_error(lambda: other.fine_tuning.jobs.cancel(job.id), openai.NotFoundError)
        expect_error(lambda: other.fine_tuning.jobs.list_events(job.id), openai.NotFoundError)
        expect_error(lambda: other.chat.completions.create(model="oai-ft:1", messages=messages, max_tokens=2),
                     openai.NotFoundError)
        check(other.files.list().data == [] and other.fine_tuning.jobs.list().data == [], "other tenant lists")
        expect_error(lambda: openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).files.list(),
                     openai.AuthenticationError)

        step = "files.delete"
        with open(os.path.join(repo, "data", "sample", "valid.jsonl"), "rb") as fh:
            v = client.files.create(file=fh, purpose="fine-tune")
        deleted = client.files.delete(v.id)
        check(deleted.deleted and deleted.id == v.id, f"delete: {deleted}")
        expect_error(lambda: client.files.retrieve(v.id), openai.NotFoundError)

        print("openai_fine_tuning_test: OK")
        return 0
    except Failure as e:
        raise Failure(f"[{step}] {e}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    return g.run_main("openai_fine_tuning_test.py", run)


if __name__ == "__main__":
    sys.exit(main())
