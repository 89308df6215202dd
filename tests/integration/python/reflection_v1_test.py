#!/usr/bin/env python3
"""Server reflection in both versions, through Python grpcio against a real oft_server.

  reflection_v1_test.py OFT_SERVER REPO_ROOT

grpc.reflection.v1 stubs are generated here with grpcio-tools from
proto/grpc/reflection/v1/reflection.proto; v1alpha ones from the hand-written copy of its public
proto in grpcio_client_test.py. (The grpcio-reflection wheel, 1.85.1, ships only a v1alpha
client.) Checks:
  - v1: list_services names the oft.v1 services, health and both reflection services;
    file_containing_symbol / file_by_filename answers build a client-side descriptor pool in
    which oft.v1.JobService has its methods; unknown names get NOT_FOUND naming the field, a
    20 KB name comes back cut; an empty request gets INVALID_ARGUMENT; the stream goes on
    after each error, one answer per request, in order;
  - v1 is wire-compatible with v1alpha: v1alpha's own messages sent over the v1 method path;
  - v1alpha still answers, with the same service list.
Exits non-zero with a message naming the failed step.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpcio_client_test as g  # noqa: E402

check, Failure = g.check, g.Failure
V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
NOT_FOUND, INVALID_ARGUMENT = 5, 3
OFT_SERVICES = {"oft.v1.JobService", "oft.v1.DatasetService", "oft.v1.AdapterService",
                "oft.v1.ModelService", "oft.v1.InferenceService"}


def generate(repo, tmp):
    """v1 stubs from the repository's proto, v1alpha from the hand-written public copy."""
    from grpc_tools import protoc
    src = os.path.join(tmp, "protos")
    gen = os.path.join(tmp, "gen")
    os.makedirs(src)
    os.makedirs(gen)
    # Flat file names: a generated "grpc/..." module tree would shadow the grpc package.
    with open(os.path.join(repo, "proto", "grpc", "reflection", "v1", "reflection.proto")) as fh:
        v1_text = fh.read()
    for name, text in (("refl_v1.proto", v1_text), ("refl_v1alpha.proto", g.REFLECTION_PROTO)):
        with open(os.path.join(src, name), "w") as fh:
            fh.write(text)
        rc = protoc.main(["protoc", f"-I{src}", f"--python_out={gen}", f"--grpc_python_out={gen}",
                          os.path.join(src, name)])
        check(rc == 0, f"grpc_tools.protoc failed ({rc}) on {name}")
    sys.path.insert(0, gen)


def client_pool(responses):
    """A descriptor pool holding every file of these file_descriptor_responses."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    files = {}
    for r in responses:
        check(r.WhichOneof("message_response") == "file_descriptor_response",
              f"expected files, got {r}")
        for raw in r.file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            files[fd.name] = fd
    pool, added = descriptor_pool.DescriptorPool(), set()
    while len(added) < len(files):  # imports first
        ready = [n for n, fd in files.items() if n not in added and set(fd.dependency) <= added]
        check(ready, f"files {sorted(set(files) - added)} import files the server did not send")
        for n in ready:
            pool.Add(files[n])
            added.add(n)
    return pool


def ask(call, requests):
    return list(call(iter(requests), timeout=g.DEADLINE))


def run(server, repo, tmp):
    step = "generate stubs"
    generate(repo, tmp)
    import grpc
    import refl_v1_pb2 as v1
    import refl_v1_pb2_grpc as v1_grpc
    import refl_v1alpha_pb2 as alpha
    import refl_v1alpha_pb2_grpc as alpha_grpc

    proc, port, _ = g.start_server(server, repo, tmp)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)

        step = "v1 questions"
        huge = "x" * 20000
        reqs = [v1.ServerReflectionRequest(list_services=""),
                v1.ServerReflectionRequest(file_containing_symbol="oft.v1.JobService.CreateJob"),
                v1.ServerReflectionRequest(file_containing_symbol="oft.v1.NoSuchThing"),
                v1.ServerReflectionRequest(file_by_filename="oft/v1/jobs.proto", host="any"),
                v1.ServerReflectionRequest(file_by_filename=huge),
                v1.ServerReflectionRequest(),
                v1.ServerReflectionRequest(all_extension_numbers_of_type="oft.v1.Nope"),
                v1.ServerReflectionRequest(file_containing_extension=v1.ExtensionRequest(
                    containing_type="google.protobuf.FileOptions", extension_number=99999)),
                v1.ServerReflectionRequest(all_extension_numbers_of_type="google.protobuf.FileOptions")]
        resps = ask(v1_grpc.ServerReflectionStub(channel).ServerReflectionInfo, reqs)
        check(len(resps) == len(reqs), f"v1 answered {len(resps)} of {len(reqs)} requests")
        for i, (q, a) in enumerate(zip(reqs, resps)):
            check(a.original_request == q, f"answer {i} is for {a.original_request}, not {q}")
        v1_services = {s.name for s in resps[0].list_services_response.service}
        want = OFT_SERVICES | {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                               "grpc.reflection.v1alpha.ServerReflection"}
        check(want <= v1_services, f"v1 list_services: {sorted(v1_services)} lacks {sorted(want - v1_services)}")
        pool = client_pool([resps[1], resps[3]])
        methods = {m.name for m in pool.FindServiceByName("oft.v1.JobService").methods}
        check({"CreateJob", "WatchJob", "GetJob", "ListJobs", "CancelJob"} <= methods,
              f"reflected JobService methods {sorted(methods)}")
        check(resps[3].valid_host == "any", f"valid_host {resps[3].valid_host!r}")
        for i, code, field in ((2, NOT_FOUND, "file_containing_symbol"), (4, NOT_FOUND, "file_by_filename"),
                               (5, INVALID_ARGUMENT, "ServerReflectionRequest"),
                               (6, NOT_FOUND, "all_extension_numbers_of_type"),
                               (7, NOT_FOUND, "file_containing_extension.extension_number")):
            e = resps[i].error_response
            check(resps[i].WhichOneof("message_response") == "error_response" and e.error_code == code,
                  f"request {i}: want error {code}, got {resps[i]}")
            check(e.error_message.startswith(field), f"request {i}: error {e.error_message!r} names no {field}")
            check(len(e.error_message) < 300, f"request {i}: error message of {len(e.error_message)} bytes")
        ext = resps[8].all_extension_numbers_response
        check(resps[8].WhichOneof("message_response") == "all_extension_numbers_response" and
              ext.base_type_name == "google.protobuf.FileOptions", f"extension numbers: {resps[8]}")

        step = "v1alpha messages over the v1 method"
        raw = channel.stream_stream(V1_METHOD, request_serializer=alpha.ServerReflectionRequest.SerializeToString,
                                    response_deserializer=alpha.ServerReflectionResponse.FromString)
        got = ask(raw, [alpha.ServerReflectionRequest(file_containing_symbol="oft.v1.ModelService"),
                        alpha.ServerReflectionRequest(list_services="")])
        check(len(got) == 2, f"answered {len(got)} of 2")
        client_pool([got[0]]).FindServiceByName("oft.v1.ModelService")
        check({s.name for s in got[1].list_services_response.service} == v1_services,
              "v1alpha-encoded list_services differs from v1's")

        step = "v1alpha"
        got = ask(alpha_grpc.ServerReflectionStub(channel).ServerReflectionInfo,
                  [alpha.ServerReflectionRequest(list_services=""),
                   alpha.ServerReflectionRequest(file_containing_symbol="oft.v1.JobService")])
        check(len(got) == 2, f"v1alpha answered {len(got)} of 2")
        alpha_services = {s.name for s in got[0].list_services_response.service}
        check(alpha_services == v1_services,
              f"v1alpha lists {sorted(alpha_services)}, v1 {sorted(v1_services)}")
        client_pool([got[1]]).FindServiceByName("oft.v1.JobService")
        channel.close()

        step = "SIGTERM"
        g.stop_server(proc)
        print(f"PASS: grpcio {grpc.__version__}: reflection v1 ({len(reqs)} requests on one stream, "
              f"v1alpha encoding too) and v1alpha, {len(v1_services)} services")
        return 0
    except (Failure, grpc.RpcError) as e:
        what = f"RPC failed: {e.code()} {e.details()}" if isinstance(e, grpc.RpcError) else str(e)
        raise Failure(f"[{step}] {what}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(g.run_main("reflection_v1_test.py", run))
