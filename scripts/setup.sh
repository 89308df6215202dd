#!/usr/bin/env bash
# Idempotent setup: installs what a fresh Debian 12 machine lacks to build and test the project.
#   - Debian packages: gRPC, protobuf, Abseil, prometheus-cpp, SQLite, GoogleTest, Google Benchmark,
#     OpenBLAS, PCRE2, RE2 (client regexes), nlohmann-json, spdlog (the server's structured log),
#     ccache, ninja, Prometheus (for the scrape test), clang (the -Wthread-safety contract check),
#     cpp-httplib (the HTTP API), gloo's headers (libgloo-dev: ProcessGroupGloo.hpp, server/dist).
#   - LibTorch from the PyPI `torch` wheel, pinned below, into the project-local venv .venv/.
# Re-running it does nothing when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="${OFT_TORCH_VERSION:-2.11.0}"   # README explains the pin.
APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git python3-venv
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev libsqlite3-dev sqlite3 libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas0-pthread libpcre2-dev libicu-dev nlohmann-json3-dev libssl-dev prometheus
  libyaml-cpp-dev openssl libre2-dev clang libclang-rt-14-dev libspdlog-dev
  libcpp-httplib-dev libgloo-dev
)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${OFT_PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
have=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
if [ "${have%%+*}" != "$TORCH_VERSION" ]; then
  echo "setup: installing torch==$TORCH_VERSION into .venv (LibTorch for C++)"
  .venv/bin/pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" numpy
fi
# Independent Python peers for parity/interop tests (tokenizers, safetensors, transformers, PEFT,
# a grpcio client, the official openai client). setuptools: grpcio-tools needs >= 77, torch 2.11 < 82.
PY_PEERS=(safetensors==0.8.0 tokenizers==0.23.3 transformers==5.23.0 peft==0.21.2
          grpcio==1.85.1 grpcio-tools==1.85.1 openai==3.51.0 "setuptools>=77.0.1,<82")
if ! .venv/bin/python -c 'import safetensors, tokenizers, transformers, peft, grpc, grpc_tools, openai' 2>/dev/null; then
  echo "setup: installing Python test peers: ${PY_PEERS[*]}"
  .venv/bin/pip install -q --disable-pip-version-check "${PY_PEERS[@]}"
fi
# The .debs the engine-only GPU build carries to GPU machines (scripts/gpu_check.sh); the
# ctest engine_only_build proves the build from them.
scripts/fetch_gpu_debs.sh >/dev/null
echo "setup: ok (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)' 2>/dev/null))"
