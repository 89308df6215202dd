#!/usr/bin/env python3
"""Build-contract checks that the compiler of the normal build does not make.

  check_contracts.py thread-safety BUILD_DIR
      Compiles (syntax only) every project source that uses absl::Mutex or the
      ABSL_*_LOCKS_* annotations with clang's -Wthread-safety as an error, using the flags of
      BUILD_DIR/compile_commands.json. GCC ignores the annotations; clang checks them.

  check_contracts.py link-only-headers BUILD_DIR SOURCE_DIR
      Targets that link LibTorch libraries $<LINK_ONLY:...> (the gRPC/protobuf layer: LibTorch
      bundles its own protobuf headers) must not see LibTorch: for every source of such a target
      the compile command has no LibTorch include directory and the headers it includes
      (gcc -M) contain no LibTorch header.

  check_contracts.py layers SOURCE_DIR
      No library depends on one above it: every `#include "server/<component>/..."` in a file
      of server/<other>/ names a component of a strictly lower layer (LAYERS below; a
      component missing from LAYERS is a violation too, so a new folder gets a place).

  check_contracts.py file-lines SOURCE_DIR
      No source file under server/ or client/ is longer than MAX_LINES lines (one concept
      per file: a longer file holds several).

Exit status 0 when the contract holds; 1 with one line per violation; 2 for bad usage.
"""
import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

MUTEX_RE = re.compile(r"absl::Mutex\b|ABSL_(GUARDED_BY|EXCLUSIVE_LOCKS_REQUIRED|LOCKS_EXCLUDED)")
TORCH_RE = re.compile(r"/(torch|ATen|c10|caffe2)/")
PROJECT_DIRS = ("server/", "client/", "tools/", "bench/", "tests/")


# The layers of server/, lowest first. A component may include only components of lower
# layers; components of one layer are independent of each other. "" is server/'s own files
# (server.cc, main.cc: the composition root).
LAYERS = [
    ["common"],
    ["oft"],
    ["quant"],
    ["model", "data", "dist"],  # dist: torchrun env + the c10d process group
    ["artifacts"],          # PEFT files and the adapter store; the trainer writes them
    ["train"],
    ["jobs", "serving", "metrics"],
    ["service"],            # the gRPC services and the logic behind them
    ["http"],               # the HTTP server: OpenAI's API mapped onto the services' logic
    [""],
]
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"server/([A-Za-z0-9_]+)/', re.M)


def check_layers(source_dir):
    rank = {c: i for i, layer in enumerate(LAYERS) for c in layer}
    server = os.path.join(source_dir, "server")
    violations, files = [], 0
    for root, _, names in os.walk(server):
        rel_dir = os.path.relpath(root, server)
        comp = "" if rel_dir == "." else rel_dir.split(os.sep)[0]
        for name in sorted(names):
            if not name.endswith((".h", ".cc", ".cu", ".cuh")):
                continue
            files += 1
            path = os.path.join(root, name)
            rel = os.path.relpath(path, source_dir)
            if comp not in rank:
                violations.append(f"{rel}: component server/{comp} has no layer in "
                                  "check_contracts.py LAYERS")
                continue
            with open(path, errors="replace") as f:
                text = f.read()
            for dep in sorted(set(INCLUDE_RE.findall(text))):
                if dep == comp:
                    continue
                if dep not in rank:
                    violations.append(f"{rel}: includes server/{dep}/, which has no layer")
                elif rank[dep] >= rank[comp]:
                    how = "beside" if rank[dep] == rank[comp] else "above"
                    violations.append(f"{rel}: server/{comp or '.'} includes server/{dep}/, "
                                      f"a component {how} it")
    for v in violations:
        print(v)
    print(f"layers: {files} files of server/ checked, {len(violations)} violations")
    return 1 if violations or files == 0 else 0


MAX_LINES = 800


def check_file_lines(source_dir):
    violations, files = [], 0
    for top in ("server", "client"):
        for root, _, names in os.walk(os.path.join(source_dir, top)):
            for name in sorted(names):
                if not name.endswith((".h", ".cc", ".cu", ".cuh")):
                    continue
                files += 1
                path = os.path.join(root, name)
                with open(path, errors="replace") as f:
                    n = sum(1 for _ in f)
                if n > MAX_LINES:
                    violations.append(f"{os.path.relpath(path, source_dir)}: {n} lines "
                                      f"(limit {MAX_LINES}): split it by concept")
    for v in violations:
        print(v)
    print(f"file-lines: {files} files of server/ and client/ checked, {len(violations)} over "
          f"{MAX_LINES} lines")
    return 1 if violations or files == 0 else 0


def load_commands(build_dir):
    path = os.path.join(build_dir, "compile_commands.json")
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        sys.exit(f"check_contracts: cannot read {path}: {e} (configure with "
                 "CMAKE_EXPORT_COMPILE_COMMANDS=ON)")


def split_command(entry):
    """The compiler arguments of an entry, without launcher, compiler, output and deps."""
    args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    while args and not args[0].startswith("-") and os.path.basename(args[0]) in (
            "ccache", "sccache"):
        args = args[1:]
    out, skip = [], False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if a in ("-c", "-MD", "-MMD") or a == entry["file"]:
            continue
        out.append(a)
    return out


def project_sources(commands, source_dir):
    for e in commands:
        rel = os.path.relpath(e["file"], source_dir)
        if rel.startswith(PROJECT_DIRS) and rel.endswith((".cc", ".cpp")):
            yield rel, e


def check_thread_safety(build_dir, source_dir):
    commands = load_commands(build_dir)
    jobs = []
    for rel, e in project_sources(commands, source_dir):
        with open(e["file"], errors="replace") as f:
            text = f.read()
        header = os.path.splitext(e["file"])[0] + ".h"
        if os.path.exists(header):
            with open(header, errors="replace") as f:
                text += f.read()
        if MUTEX_RE.search(text):
            jobs.append((rel, e))
    if not jobs:
        print("check_contracts: no sources with mutexes found", file=sys.stderr)
        return 1

    def run(job):
        rel, e = job
        flags = [a for a in split_command(e) if not a.startswith(("-fopenmp", "-Werror"))]
        cmd = (["clang++", "-fsyntax-only"] + flags +
               ["-Wno-everything", "-Wthread-safety", "-Werror=thread-safety", e["file"]])
        r = subprocess.run(cmd, cwd=e["directory"], capture_output=True, text=True)
        return rel, r.returncode, r.stderr

    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for rel, code, err in pool.map(run, jobs):
            if code != 0:
                failed += 1
                print(f"{rel}: clang -Wthread-safety failed:\n{err}")
    print(f"thread-safety: {len(jobs) - failed} of {len(jobs)} sources pass")
    return 1 if failed else 0


def check_link_only_headers(build_dir, source_dir):
    commands = load_commands(build_dir)
    # Targets that link something LINK_ONLY, and their source directories.
    guarded_dirs = set()
    for root, _, files in os.walk(os.path.join(source_dir, "server")):
        if "CMakeLists.txt" in files:
            with open(os.path.join(root, "CMakeLists.txt")) as f:
                if "$<LINK_ONLY:" in f.read():
                    guarded_dirs.add(os.path.relpath(root, source_dir) + "/")
    violations, checked = [], 0
    for rel, e in project_sources(commands, source_dir):
        if os.path.dirname(rel) + "/" not in guarded_dirs:
            continue
        flags = split_command(e)
        checked += 1
        for i, a in enumerate(flags):
            path = a[2:] if a.startswith(("-I", "-isystem")) and len(a) > 2 else (
                flags[i + 1] if a in ("-I", "-isystem") and i + 1 < len(flags) else "")
            if "torch" in path and "include" in path:
                violations.append(f"{rel}: compiled with LibTorch include dir {path}")
        r = subprocess.run(["c++", "-M"] + flags + [e["file"]], cwd=e["directory"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            violations.append(f"{rel}: gcc -M failed: {r.stderr.strip()[:300]}")
            continue
        for dep in r.stdout.replace("\\\n", " ").split():
            if TORCH_RE.search(dep):
                violations.append(f"{rel}: includes LibTorch header {dep}")
                break
    for v in violations:
        print(v)
    print(f"link-only-headers: {checked} sources of LINK_ONLY targets checked, "
          f"{len(violations)} violations")
    return 1 if violations or checked == 0 else 0


def main(argv):
    if len(argv) < 3 or argv[1] not in ("thread-safety", "link-only-headers", "layers", "file-lines"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "layers":
        return check_layers(os.path.abspath(argv[2]))
    if argv[1] == "file-lines":
        return check_file_lines(os.path.abspath(argv[2]))
    build_dir = os.path.abspath(argv[2])
    source_dir = os.path.abspath(argv[3] if len(argv) > 3 else
                                 os.path.join(os.path.dirname(__file__), ".."))
    if argv[1] == "thread-safety":
        return check_thread_safety(build_dir, source_dir)
    return check_link_only_headers(build_dir, source_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
