# oft-server image: CUDA runtime + LibTorch (from the pinned torch wheel) + oft_server, oftctl,
# oft_train (data-parallel ranks: deploy/k8s/train) and the embedded default model.
#   docker build -t oft-server .
#   docker run --gpus all -p 50051:50051 -p 9464:9464 -v oft-data:/data oft-server \
#     --api_key=default:$(openssl rand -hex 24) --devices=cuda:0
# Extra arguments are appended to the ENTRYPOINT's flags (see deploy/k8s/base/deployment.yaml).
# Ubuntu 24.04 ships the same gRPC 1.51 / protobuf 3.21 / Abseil 20220623 as Debian 12.

# ---- build stage -------------------------------------------------------------------------
FROM nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04 AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      build-essential cmake ninja-build ccache pkg-config git python3 python3-venv python3-pip \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      prometheus-cpp-dev libsqlite3-dev sqlite3 libgtest-dev libgmock-dev libbenchmark-dev \
      libopenblas0-pthread libpcre2-dev libicu-dev nlohmann-json3-dev libssl-dev prometheus \
      libre2-dev libyaml-cpp-dev libspdlog-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
# Installs the pinned torch wheel (CUDA-enabled on PyPI) into /src/.venv; the Debian
# packages are already present.
RUN scripts/setup.sh
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DOFT_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="80;90" \
    && cmake --build build -j"$(nproc)" --target oft_server oft_train_worker oft_train_bin oftctl
# Stage what the runtime needs: the binaries, and the system shared libraries they use
# (gRPC, protobuf, Abseil, prometheus-cpp, SQLite, ...; not glibc, not CUDA, not LibTorch,
# which come from the base image and the wheel) so the runtime stage needs no -dev packages.
RUN set -eux; mkdir -p /out/bin /out/lib; \
    cp build/server/oft_server build/tools/oft_train_worker build/tools/oft_train /out/bin/; \
    cp "$(find build -name oftctl -type f -perm -u+x | head -n1)" /out/bin/; \
    ldd /out/bin/oft_server /out/bin/oft_train_worker /out/bin/oft_train /out/bin/oftctl \
      | awk '$2 == "=>" && $3 ~ /^\/(usr\/)?lib\// {print $3}' | sort -u \
      | grep -Ev '/(libc|libm|libdl|librt|libutil|libpthread|ld-linux[^/]*|libcuda|libnvidia[^/]*)\.so' \
      | xargs -r cp -L -t /out/lib/

# ---- runtime stage -----------------------------------------------------------------------
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      ca-certificates libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /data oft \
    && mkdir -p /data && chown oft:oft /data
# LibTorch's shared libraries and the NVIDIA wheels they load, in the wheel's relative layout
# (libtorch_cuda.so finds cuBLAS, cuDNN, NCCL through $ORIGIN/../../nvidia/*/lib).
COPY --from=build /src/.venv/lib/python3.12/site-packages/torch/lib /opt/oft/python/torch/lib
COPY --from=build /src/.venv/lib/python3.12/site-packages/nvidia /opt/oft/python/nvidia
COPY --from=build /out/lib /opt/oft/lib
COPY --from=build /out/bin /opt/oft/bin
COPY models/default /opt/oft/models/default
ENV LD_LIBRARY_PATH=/opt/oft/python/torch/lib:/opt/oft/lib \
    PATH=/opt/oft/bin:$PATH
USER 10001:10001
WORKDIR /opt/oft
VOLUME ["/data"]
# 50051 gRPC, 8000 the OpenAI-compatible HTTP API, 9464 /metrics (internal).
EXPOSE 50051 8000 9464
# --model=default=models/default (the server's default) resolves under WORKDIR.
ENTRYPOINT ["/opt/oft/bin/oft_server", "--listen=0.0.0.0:50051", "--http_listen=0.0.0.0:8000", "--metrics_listen=0.0.0.0:9464", "--data_dir=/data"]
