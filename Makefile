# Entry points. `make demo` runs the main job on the embedded default; `make test` sets up,
# builds and runs every test. Both install what a fresh Debian 12 machine lacks.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: setup configure build test demo bench gpu-check clean format

setup:
	scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

# Until the gRPC service exists, the main job is the OFTv2 layer benchmark (CPU).
demo: build
	$(BUILD_DIR)/bench/oft_layer_bench --device=cpu

bench: build
	$(BUILD_DIR)/bench/oft_layer_bench --device=cpu --reps=7

gpu-check:
	scripts/gpu_check.sh

format:
	git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
