#!/usr/bin/env bash
# check_cuda_runtime.sh BINARY...: each binary resolves libcudart, libcublas and libcublasLt
# from the torch wheel (site-packages/nvidia/*), the copies libtorch_cuda.so loads itself,
# so a process maps one CUDA runtime (issue 13). Prints the resolution; exit 1 on a miss.
set -u
rc=0
for bin in "$@"; do
  out="$(ldd "$bin")" || { echo "$bin: ldd failed"; rc=1; continue; }
  for lib in libcudart libcublas libcublasLt; do
    line="$(grep -E "^\s*${lib}\.so" <<<"$out" | head -n1)"
    case "$line" in
      *"/site-packages/nvidia/"*) echo "ok   $bin: $line" ;;
      "") echo "FAIL $bin: $lib not linked"; rc=1 ;;
      *) echo "FAIL $bin: $line (not the torch wheel's copy)"; rc=1 ;;
    esac
  done
done
exit $rc
