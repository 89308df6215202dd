#!/usr/bin/env python3
"""An adapter made by Hugging Face PEFT enters the server's store through ImportAdapter.

  import_peft_adapter_test.py OFT_SERVER REPO_ROOT

PEFT (the venv's) wraps models/default in a random OFT adapter (init_weights=False: a rotation
far from the identity) on q_proj/v_proj and saves it; its adapter_config.json names the model by
its directory path, not by the server's name "default" (not an error: the version records the
chosen base). A grpcio client streams the two files (metadata, then header + chunks per file);
the new version downloads byte for byte, greedy generation through it is reproducible and
differs from the base model's, and importing it with a tensor dropped is INVALID_ARGUMENT
naming the module left without one. Exit 77 (skipped) when torch/transformers/peft are missing.
"""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpcio_client_test as g  # noqa: E402

check, Failure = g.check, g.Failure
PROMPT = "Question: What is the opposite of hot?\nAnswer:"
FILES = ("adapter_config.json", "adapter_model.safetensors")


def make_peft_adapter(repo, out):
    import torch
    from peft import OFTConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(os.path.join(repo, "models", "default"),
                                                dtype=torch.float32)
    model = get_peft_model(base, OFTConfig(init_weights=False, oft_block_size=32,
                                           target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(out)
    return {name: open(os.path.join(out, name), "rb").read() for name in FILES}


def import_requests(adapters_pb2, name, files):
    yield adapters_pb2.ImportAdapterRequest(metadata=adapters_pb2.ImportAdapterMetadata(
        name=name, base_model="default", description="made by PEFT"))
    for fname, data in files.items():
        yield adapters_pb2.ImportAdapterRequest(file_header=adapters_pb2.AdapterFile(
            name=fname, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
        for off in range(0, len(data), 1 << 20):
            yield adapters_pb2.ImportAdapterRequest(chunk=data[off:off + (1 << 20)])


def drop_first_tensor(safetensors):
    """A valid safetensors file without its first tensor, and that tensor's name."""
    n = int.from_bytes(safetensors[:8], "little")
    header = json.loads(safetensors[8:8 + n])
    data = safetensors[8 + n:]
    names = sorted(k for k in header if k != "__metadata__")
    out, kept = {}, b""
    if "__metadata__" in header:
        out["__metadata__"] = header["__metadata__"]
    for name in names[1:]:
        begin, end = header[name]["data_offsets"]
        out[name] = dict(header[name], data_offsets=[len(kept), len(kept) + end - begin])
        kept += data[begin:end]
    text = json.dumps(out).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + kept, names[0]


def run(server, repo, tmp):
    try:
        files = make_peft_adapter(repo, os.path.join(tmp, "peft"))
    except ImportError as e:
        print(f"SKIP: {e}")
        return 77
    cfg = json.loads(files["adapter_config.json"])
    check(cfg["base_model_name_or_path"] != "default",
          f"PEFT recorded base_model_name_or_path {cfg['base_model_name_or_path']!r}")
    g.generate_stubs(repo, tmp)
    import grpc
    from oft.v1 import adapters_pb2, adapters_pb2_grpc, common_pb2
    from oft.v1 import inference_pb2, inference_pb2_grpc

    with g.serving(server, repo, tmp) as (proc, channel):
        md = [("authorization", f"Bearer {g.API_KEY}")]
        adapters = adapters_pb2_grpc.AdapterServiceStub(channel)
        inference = inference_pb2_grpc.InferenceServiceStub(channel)

        a = adapters.ImportAdapter(import_requests(adapters_pb2, "peft-made", files), timeout=120,
                                   metadata=md)
        check(a.ref.name == "peft-made" and a.ref.version == 1, f"ImportAdapter: imported as {a.ref}")
        check(a.base_model == "default", f"ImportAdapter: base_model {a.base_model!r}")

        got, current = {}, None
        for r in adapters.DownloadAdapter(adapters_pb2.DownloadAdapterRequest(ref=a.ref),
                                          timeout=60, metadata=md):
            if r.WhichOneof("payload") == "file_header":
                current = r.file_header.name
                got[current] = b""
            else:
                got[current] += r.chunk
        for name in FILES:
            check(got.get(name) == files[name], f"DownloadAdapter: {name} differs from the import")

        def tokens(**kw):
            req = inference_pb2.GenerateRequest(text=PROMPT, max_tokens=12, temperature=0.0, **kw)
            return [t for r in inference.Generate(req, timeout=60, metadata=md) for t in r.token_ids]

        ref = common_pb2.AdapterVersionRef(name="peft-made", version=1)
        tuned = tokens(adapter_ref=ref)
        check(tuned and tuned == tokens(adapter_ref=ref), "Generate: greedy is not reproducible")
        check(tuned != tokens(), "Generate: the PEFT adapter does not change greedy generation")

        broken, dropped = drop_first_tensor(files["adapter_model.safetensors"])
        module = dropped[len("base_model.model."):-len(".oft_R.weight")]
        try:
            adapters.ImportAdapter(import_requests(adapters_pb2, "peft-broken",
                                                   {**files, "adapter_model.safetensors": broken}),
                                   timeout=120, metadata=md)
            raise Failure("ImportAdapter: an adapter without a targeted module's tensor was imported")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and module in e.details(),
                  f"ImportAdapter without {dropped}: {e.code()}: {e.details()} "
                  f"(want INVALID_ARGUMENT naming {module})")
        g.stop_server(proc)
    print("import_peft_adapter_test: OK")
    return 0


if __name__ == "__main__":
    sys.exit(g.run_main("import_peft_adapter_test.py", run))
