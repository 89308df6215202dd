#!/usr/bin/env bash
# Downloads (here, on the Debian 12 development machine) the .deb files that the
# kernels-only build (-DOFT_KERNELS_ONLY=ON) needs on a GPU machine that lacks the project's
# Debian libraries, into third_party_debs/ (git-ignored). Carry that folder with the device
# run; scripts/gpu_check.sh unpacks it with dpkg-deb -x into its build folder.
#   scripts/fetch_gpu_debs.sh && <device run: scripts/gpu_check.sh, carry third_party_debs>
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(libabsl-dev libabsl20220623 libgtest-dev libgmock-dev libssl-dev libssl3)
mkdir -p third_party_debs
cd third_party_debs
apt-get download "${PKGS[@]}"
ls -la
