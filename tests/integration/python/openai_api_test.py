#!/usr/bin/env python3
"""The official `openai` Python client (PyPI) against oft_server's HTTP API (issue 14).

  openai_api_test.py OFT_SERVER REPO_ROOT

Starts oft_server with --http_listen=127.0.0.1:0 and an API key, trains a 2-step adapter
through gRPC (grpcio, stubs generated from proto/ as grpcio_client_test.py does), then:
  - auth: no key / a wrong key -> openai.AuthenticationError (401);
  - GET /v1/models lists the base model, the adapter as name and name:version, the alias;
  - completions and chat completions, streamed and not, for the base model, the adapter
    (by name, name:version and alias): the same seed gives exactly the text of the gRPC
    Generate with the same settings; streamed chunks concatenate to the unstreamed text;
    usage counts; stream_options.include_usage; finish_reason;
  - bad input: n=2, temperature 3, logprobs, an unknown model, a non-JSON body -> 4xx with
    the field named, and the server keeps serving;
  - /healthz, /readyz and /metrics on the HTTP port; SIGTERM ends the server with exit 0.
Exits non-zero with a message naming the failed step.
"""
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpcio_client_test as g  # noqa: E402  (start_server, generate_stubs, check, Failure)

try:
    import openai
except ImportError as e:  # scripts/setup.sh installs it into .venv
    sys.exit(f"FAIL: openai not importable ({e}); run scripts/setup.sh")

check, Failure = g.check, g.Failure
PROMPT = "Question: What is 7 plus 5?\nAnswer:"
MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "What is 7 plus 5?"},
            {"role": "assistant", "content": "12"},
            {"role": "user", "content": "And 3 plus 4?"}]


def http_port(tmp):
    """The HTTP port from --http_port_file (written just after the gRPC port file)."""
    path, deadline = os.path.join(tmp, "http_port"), time.time() + 60
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as fh:
                text = fh.read().strip()
            if text:
                return int(text)
        time.sleep(0.05)
    raise Failure("oft_server did not write --http_port_file within 60 s")


def raw(port, method, path, body=None, key=g.API_KEY):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=body)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def train_adapter(channel, md, repo):
    """Uploads data/sample and trains a 2-step adapter 'oai'; returns its AdapterVersionRef."""
    from oft.v1 import datasets_pb2, datasets_pb2_grpc, jobs_pb2, jobs_pb2_grpc
    datasets = datasets_pb2_grpc.DatasetServiceStub(channel)
    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    with open(os.path.join(repo, "data", "sample", "train.jsonl"), "rb") as fh:
        data = fh.read()
    digest = g.sha256_bytes(data)

    def upload():
        yield datasets_pb2.UploadDatasetRequest(header=datasets_pb2.UploadDatasetHeader(
            name="oai-sample", sha256=digest, size_bytes=len(data)))
        yield datasets_pb2.UploadDatasetRequest(chunk=data)

    ds = datasets.UploadDataset(upload(), timeout=60, metadata=md)
    spec = jobs_pb2.JobSpec(
        base_model="default", training_dataset_ids=[ds.id], output_adapter_name="oai",
        hyperparameters=jobs_pb2.Hyperparameters(max_steps=2, batch_size=4, max_seq_len=128,
                                                 learning_rate=5e-2, seed=3))
    job = jobs.CreateJob(jobs_pb2.CreateJobRequest(idempotency_key="oai-1", spec=spec),
                         timeout=g.DEADLINE, metadata=md)
    for ev in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id), timeout=g.JOB_DEADLINE, metadata=md):
        if ev.WhichOneof("payload") == "state_changed" and ev.state_changed.state == jobs_pb2.Job.FAILED:
            raise Failure(f"job FAILED: {ev.state_changed.failure}")
    job = jobs.GetJob(jobs_pb2.GetJobRequest(id=job.id), timeout=g.DEADLINE, metadata=md)
    check(job.state == jobs_pb2.Job.SUCCEEDED, f"job state {job.state}")
    return job.result


def grpc_text(inference, md, chat=False, **kw):
    from oft.v1 import inference_pb2
    if chat:
        kw["chat"] = inference_pb2.ChatPrompt(
            messages=[inference_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in MESSAGES])
    else:
        kw["text"] = PROMPT
    out = list(inference.Generate(inference_pb2.GenerateRequest(**kw), timeout=60, metadata=md))
    return "".join(r.text_delta for r in out), sum(len(r.token_ids) for r in out)


def generated_tokens(port):
    status, body = raw(port, "GET", "/metrics", key=None)
    check(status == 200, f"/metrics {status}")
    for line in body.splitlines():
        if line.startswith("oft_generated_tokens_total"):
            return float(line.split()[-1])
    raise Failure("/metrics lacks oft_generated_tokens_total")


def check_disconnect(client, port):
    """A streamed completion whose client goes away after the first chunk is cancelled: the
    engine produces far fewer tokens than the same request run to its end, and serves on."""
    import http.client
    for seed in range(1, 8):  # a sampled completion long enough to tell stopped from finished
        full = client.completions.create(model="default", prompt=PROMPT, max_tokens=480, temperature=2.0,
                                         seed=seed)
        if full.usage.completion_tokens >= 200:
            break
    else:
        raise Failure("no seed gives a completion of >= 200 tokens")
    before = generated_tokens(port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/completions", body=json.dumps(
        {"model": "default", "prompt": PROMPT, "max_tokens": 480, "temperature": 2.0, "seed": seed,
         "stream": True}), headers={"Authorization": f"Bearer {g.API_KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    check(resp.status == 200, f"stream status {resp.status}")
    first = resp.read(6)  # de-chunked by http.client
    check(first == b"data: ", f"first SSE bytes {first!r}")
    conn.sock.shutdown(2)
    conn.close()
    time.sleep(1.0)
    spent = generated_tokens(port) - before
    time.sleep(0.5)
    check(generated_tokens(port) - before == spent, "tokens still being generated 1.5 s after the disconnect")
    check(spent < full.usage.completion_tokens / 2,
          f"the disconnected stream produced {spent:g} of {full.usage.completion_tokens} tokens: not cancelled")
    again = client.completions.create(model="default", prompt=PROMPT, max_tokens=4, temperature=0)
    check(again.usage.completion_tokens >= 1, "serving after a disconnect")


def run(server, repo, tmp):
    step = "start"
    g.generate_stubs(repo, tmp)
    from oft.v1 import inference_pb2, inference_pb2_grpc
    import grpc
    proc, port, _ = g.start_server(server, repo, tmp, extra_flags=(
        "--metrics_listen=", "--http_listen=127.0.0.1:0", f"--http_port_file={os.path.join(tmp, 'http_port')}"))
    try:
        hport = http_port(tmp)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        md = [("authorization", f"Bearer {g.API_KEY}")]
        inference = inference_pb2_grpc.InferenceServiceStub(channel)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{hport}/v1", api_key=g.API_KEY,
                               max_retries=0, timeout=120)

        step = "auth"
        for key in ("wrong-key",):
            bad = openai.OpenAI(base_url=f"http://127.0.0.1:{hport}/v1", api_key=key, max_retries=0)
            try:
                bad.models.list()
                raise Failure(f"models.list with key {key!r} succeeded")
            except openai.AuthenticationError as e:
                check(e.status_code == 401, f"status {e.status_code}")
        status, body = raw(hport, "GET", "/v1/models", key=None)
        check(status == 401 and "missing API key" in body, f"no key: {status} {body[:200]}")

        step = "train an adapter (gRPC)"
        ref = train_adapter(channel, md, repo)
        inference.SetAlias(inference_pb2.SetAliasRequest(alias="oai-prod", target=ref), timeout=60,
                           metadata=md)

        step = "GET /v1/models"
        models = {m.id: m for m in client.models.list().data}
        versioned = f"oai:{ref.version}"
        for want in ("default", "oai", versioned, "oai-prod"):
            check(want in models, f"/v1/models lacks {want}: {sorted(models)}")
        check(models["default"].owned_by == "system", f"default owned_by {models['default'].owned_by}")
        check(models["oai"].owned_by == "pytenant", f"oai owned_by {models['oai'].owned_by}")
        check(getattr(models[versioned], "parent", None) == "default",
              f"{versioned} parent {getattr(models[versioned], 'parent', None)}")
        check(client.models.retrieve("oai-prod").id == "oai-prod", "models.retrieve(alias)")

        step = "completions == gRPC Generate (same seed)"
        for model, grpc_target in (("default", {}), ("oai", {"adapter_ref": ref}),
                                   (versioned, {"adapter_ref": ref}), ("oai-prod", {"alias": "oai-prod"})):
            for temperature, seed in ((0.0, 1), (0.9, 1234)):
                c = client.completions.create(model=model, prompt=PROMPT, max_tokens=12,
                                              temperature=temperature, seed=seed)
                want, ntok = grpc_text(inference, md, max_tokens=12, temperature=temperature,
                                       seed=seed, **grpc_target)
                got = c.choices[0].text
                check(got == want, f"{model} T={temperature}: HTTP {got!r} != gRPC {want!r}")
                check(c.usage.completion_tokens == ntok, f"usage {c.usage} vs {ntok} tokens")
                check(c.choices[0].finish_reason in ("stop", "length"), f"finish {c.choices[0].finish_reason}")
                check(c.object == "text_completion", f"object {c.object}")
        base = client.completions.create(model="default", prompt=PROMPT, max_tokens=12, temperature=0)
        tuned = client.completions.create(model="oai", prompt=PROMPT, max_tokens=12, temperature=0)
        check(base.choices[0].text != tuned.choices[0].text,
              "the adapter does not change the greedy completion (is it applied?)")

        step = "chat completions == gRPC Generate (same seed)"
        for model, grpc_target in (("default", {}), ("oai", {"adapter_ref": ref})):
            c = client.chat.completions.create(model=model, messages=MESSAGES, max_completion_tokens=10,
                                               temperature=0.7, seed=99)
            want, ntok = grpc_text(inference, md, chat=True, max_tokens=10, temperature=0.7, seed=99,
                                   **grpc_target)
            check(c.choices[0].message.role == "assistant", f"role {c.choices[0].message.role}")
            check(c.choices[0].message.content == want,
                  f"chat {model}: HTTP {c.choices[0].message.content!r} != gRPC {want!r}")
            check(c.usage.completion_tokens == ntok and c.usage.prompt_tokens > 0, f"usage {c.usage}")

        step = "streaming"
        full = client.completions.create(model="oai", prompt=PROMPT, max_tokens=16, temperature=0.8, seed=5)
        chunks = list(client.completions.create(model="oai", prompt=PROMPT, max_tokens=16, temperature=0.8,
                                                seed=5, stream=True, stream_options={"include_usage": True}))
        text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        check(text == full.choices[0].text, f"stream {text!r} != {full.choices[0].text!r}")
        finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        check(finishes == [full.choices[0].finish_reason], f"finish reasons in the stream: {finishes}")
        check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == full.usage.completion_tokens,
              f"last chunk usage {chunks[-1].usage}")
        chat_full = client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=12, seed=8)
        chat_chunks = list(client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=12,
                                                          seed=8, stream=True))
        check(chat_chunks[0].choices[0].delta.role == "assistant", "first chat chunk has no role")
        chat_text = "".join(ch.choices[0].delta.content or "" for ch in chat_chunks)
        check(chat_text == chat_full.choices[0].message.content,
              f"chat stream {chat_text!r} != {chat_full.choices[0].message.content!r}")

        step = "bad input"
        cases = [
            (dict(model="default", prompt=PROMPT, n=2), openai.BadRequestError, "n must be 1"),
            (dict(model="default", prompt=PROMPT, temperature=3), openai.BadRequestError, "temperature"),
            (dict(model="default", prompt=PROMPT, logprobs=2), openai.BadRequestError, "logprobs"),
            (dict(model="no-such-model", prompt=PROMPT), openai.NotFoundError, "no-such-model"),
            (dict(model="oai:999", prompt=PROMPT), openai.NotFoundError, "oai:999"),
            (dict(model="default", prompt=PROMPT, max_tokens=5000), openai.BadRequestError, "max_tokens"),
        ]
        for kw, err, needle in cases:
            try:
                client.completions.create(**kw)
                raise Failure(f"completions.create({kw}) succeeded")
            except err as e:
                check(needle in str(e), f"{kw}: error {e} does not mention {needle!r}")
        status, body = raw(hport, "POST", "/v1/chat/completions", body=b"{not json")
        check(status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error",
              f"non-JSON body: {status} {body[:200]}")
        status, body = raw(hport, "POST", "/v1/chat/completions",
                           body=json.dumps({"model": "default", "messages": [{"role": "tool", "content": "x"}]}).encode())
        check(status == 400 and "messages[0].role" in body, f"bad role: {status} {body[:200]}")
        again = client.completions.create(model="default", prompt=PROMPT, max_tokens=12, temperature=0)
        check(again.choices[0].text == base.choices[0].text, "serving changed after bad requests")

        step = "a streaming client disconnects: its generation stops"
        check_disconnect(client, hport)

        step = "/healthz /readyz /metrics"
        check(raw(hport, "GET", "/healthz", key=None)[0] == 200, "/healthz")
        check(raw(hport, "GET", "/readyz", key=None)[0] == 200, "/readyz")
        status, body = raw(hport, "GET", "/metrics", key=None)
        check(status == 200 and "oft_generated_tokens_total" in body, f"/metrics: {status}")

        step = "SIGTERM"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
        check(rc == 0, f"oft_server exited with {rc} after SIGTERM")
        print("openai_api_test: OK")
        return 0
    except Failure as e:
        raise Failure(f"[{step}] {e}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    return g.run_main("openai_api_test.py", run)


if __name__ == "__main__":
    sys.exit(main())
