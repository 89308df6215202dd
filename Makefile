# Entry points. `make demo` runs the main job on the embedded default; `make test` sets up,
# builds and runs every test. Both install what a fresh Debian 12 machine lacks.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: setup configure build test demo bench bench-peers gpu-check engine-check clean format fuzz sanitize

setup:
	scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) scripts/fuzz.sh $(BUILD_DIR)-fuzz
	SANITIZE_TARGETS="$(SANITIZE_SMOKE_TARGETS)" JOBS=$(JOBS) scripts/sanitize.sh address

# libFuzzer targets (tests/fuzz) for the parsers of untrusted bytes, clang + ASan/UBSan:
# `make fuzz FUZZ_SECONDS=600` fuzzes each target for 10 minutes; `make test` runs each for
# FUZZ_SMOKE_SECONDS.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh $(BUILD_DIR)-fuzz

# ASan+UBSan over the unit and integration tests, TSan over the concurrency tests
# (scripts/sanitize.sh; SANITIZE_SCOPE=quick for the LibTorch-free components only).
# `make test` runs ASan+UBSan over SANITIZE_SMOKE_TARGETS (the executor, scheduler, job store,
# tokenizer, dataset and job-file tests: about 110 tests, minutes on 2 cores); the full
# scopes take hours there (docs/hardening.md, "Sanitizers").
SANITIZE_SMOKE_TARGETS ?= common_executor_test scheduler_test job_store_test tokenizer_test \
  oft_dataset_test client_job_file_test
sanitize: setup
	scripts/sanitize.sh all

# The main job on the embedded default model: base generation, an OFTv2 finetune on the
# sample dataset with live progress, the PEFT artifact, generation with the adapter.
demo: build
	scripts/demo.sh $(BUILD_DIR)

bench: build
	$(BUILD_DIR)/bench/oft_layer_bench --device=cpu --reps=7 --blocks=32,128,256
	$(BUILD_DIR)/bench/model_bench --model_dir=models/default
	$(BUILD_DIR)/bench/train_step_bench --blocks=32,128,256
	OFT_CPU_GEMM=mkl $(BUILD_DIR)/bench/cpu_gemm_bench
	OFT_CPU_GEMM=onednn $(BUILD_DIR)/bench/cpu_gemm_bench
	$(BUILD_DIR)/bench/serve_bench --threads=1 --reps=3
	$(BUILD_DIR)/bench/rpc_load --spawn=$(BUILD_DIR)/server/oft_server --seconds=20

# Ours vs PEFT (same model dir, batch, seq, threads, AdamW), side by side, prints ours/PEFT.
# PEER_ISA=avx2 (or generic) runs both sides on that path (bench/peers/compare.py).
PEER_ISA ?=
bench-peers: build
	.venv/bin/python bench/peers/compare.py --build_dir=$(BUILD_DIR) --model_dir=models/default \
	    --batch=8 --seq=256 --threads=2 --reps=3 --rounds=2 $(if $(PEER_ISA),--isa=$(PEER_ISA))

gpu-check:
	scripts/gpu_check.sh

# The engine-only CUDA build (what gpu_check.sh builds on a GPU machine) from the carried
# .debs in a clean build dir, compiled and linked in full (~30 min on 2 cores).
engine-check: setup
	BUILD_DIR=$(BUILD_DIR)-engine-check scripts/engine_only_check.sh full

format:
	git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
