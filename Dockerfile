# oft-server image: CUDA runtime + LibTorch (from the pinned torch wheel) + our binaries.
# Build:  docker build -t oft-server .
# Run:    docker run --gpus all -p 50051:50051 -p 9464:9464 -v oft-data:/data oft-server
# (Not built in this project's CI: the CI machines have no Docker engine.)

# ---- build stage -------------------------------------------------------------------------
FROM nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04 AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      build-essential cmake ninja-build ccache pkg-config git python3 python3-venv python3-pip \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      prometheus-cpp-dev libsqlite3-dev sqlite3 libgtest-dev libgmock-dev libbenchmark-dev \
      libopenblas0-pthread libpcre2-dev nlohmann-json3-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
# Installs the pinned torch wheel into /src/.venv (Debian packages are already present).
RUN scripts/setup.sh
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DOFT_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="80;90" \
    && cmake --build build -j"$(nproc)"

# ---- runtime stage -----------------------------------------------------------------------
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51t64 libprotobuf32t64 libabsl20220623t64 libprometheus-cpp-core1.0 \
      libprometheus-cpp-pull1.0 libsqlite3-0 libpcre2-8-0 libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# LibTorch shared libraries and the CUDA runtime wheels they link against.
COPY --from=build /src/.venv/lib/python3.12/site-packages/torch/lib /opt/oft/lib/torch
COPY --from=build /src/.venv/lib/python3.12/site-packages/nvidia /opt/oft/lib/nvidia
COPY --from=build /src/build/bench/oft_layer_bench /opt/oft/bin/
ENV LD_LIBRARY_PATH=/opt/oft/lib/torch
WORKDIR /data
ENTRYPOINT ["/opt/oft/bin/oft_layer_bench"]
