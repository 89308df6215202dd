#!/usr/bin/env bash
# Downloads (here, on the Debian 12 development machine) exactly the .deb files that the
# engine-only build (-DOFT_ENGINE_ONLY=ON, also enough for -DOFT_KERNELS_ONLY=ON) needs on a
# GPU machine that has only LibTorch, nvcc and cmake, into third_party_debs/ (git-ignored).
# scripts/engine_deps_env.sh unpacks them with dpkg-deb -x into a private root (never into /).
#   scripts/fetch_gpu_debs.sh && <device run: scripts/gpu_check.sh, carry third_party_debs>
# Already present files are kept (apt-get download skips nothing, so only missing ones are
# fetched). Needs network access to the Debian mirror (apt-get update done by setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# Headers + CMake/pkg-config files (-dev) and the shared libraries they link against.
PKGS=(
  libabsl-dev libabsl20220623           # Abseil (status, strings, synchronization, ...)
  libgtest-dev libgmock-dev             # GoogleTest (static libraries)
  libssl-dev libssl3                    # OpenSSL (sha256 in server/common)
  libre2-dev libre2-9                   # RE2 (client regexes in server/common)
  libpcre2-dev libpcre2-8-0             # PCRE2 (tokenizer pre-tokenizer regexes)
  nlohmann-json3-dev                    # JSON (header-only)
  pkgconf-bin libpkgconf3               # pkg-config for RE2 and PCRE2
  libgloo-dev                           # gloo headers only (server/dist; the library is LibTorch's)
)
mkdir -p third_party_debs
cd third_party_debs
missing=()
for p in "${PKGS[@]}"; do
  compgen -G "${p}_*.deb" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then apt-get download "${missing[@]}"; fi
ls -la
