# Sourced (bash) by scripts/gpu_check.sh and scripts/engine_only_check.sh: unpacks the
# carried .debs of third_party_debs/ (scripts/fetch_gpu_debs.sh) with dpkg-deb -x into a
# private root, never into /, and points CMake, pkg-config and the loader at it.
#   DEPS_ROOT=<dir> source scripts/engine_deps_env.sh    (default: $BUILD_DIR/deps-root)
# Sets: DEPS_ROOT, ENGINE_CMAKE_ARGS (array), and exports PKG_CONFIG_*, LD_LIBRARY_PATH.
# Returns non-zero (and says why) when there are no .debs or one cannot be unpacked.
engine_deps_setup() {
  local debs_dir="${DEBS_DIR:-$PWD/third_party_debs}"
  if ! compgen -G "$debs_dir/*.deb" >/dev/null; then
    echo "engine deps: no .debs in $debs_dir (run scripts/fetch_gpu_debs.sh)" >&2
    return 1
  fi
  local build_dir="${BUILD_DIR:-build-engine}"
  case "$build_dir" in /*) ;; *) build_dir="$PWD/$build_dir" ;; esac
  DEPS_ROOT="${DEPS_ROOT:-$build_dir/deps-root}"
  mkdir -p "$DEPS_ROOT"
  local deb
  for deb in "$debs_dir"/*.deb; do
    command -v dpkg-deb >/dev/null || { echo "engine deps: dpkg-deb not found" >&2; return 1; }
    dpkg-deb -x "$deb" "$DEPS_ROOT" || { echo "engine deps: cannot unpack $deb" >&2; return 1; }
  done
  local multiarch="usr/lib/x86_64-linux-gnu"
  # pkg-config from the carried pkgconf, reading only the carried .pc files; their
  # prefix=/usr is re-rooted into DEPS_ROOT by the sysroot.
  export PKG_CONFIG_SYSROOT_DIR="$DEPS_ROOT"
  export PKG_CONFIG_LIBDIR="$DEPS_ROOT/$multiarch/pkgconfig:$DEPS_ROOT/usr/share/pkgconfig"
  unset PKG_CONFIG_PATH
  export LD_LIBRARY_PATH="$DEPS_ROOT/$multiarch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # OpenSSL's opensslconf.h/configuration.h live in the multiarch include directory.
  ENGINE_CMAKE_ARGS=(
    "-DCMAKE_PREFIX_PATH=$DEPS_ROOT/usr;$DEPS_ROOT/$multiarch/cmake"
    "-DPKG_CONFIG_EXECUTABLE=$DEPS_ROOT/usr/bin/pkgconf"
    "-DOPENSSL_ROOT_DIR=$DEPS_ROOT/usr"
    "-DOPENSSL_INCLUDE_DIR=$DEPS_ROOT/usr/include"
    "-DOPENSSL_CRYPTO_LIBRARY=$DEPS_ROOT/$multiarch/libcrypto.so"
    "-DOPENSSL_SSL_LIBRARY=$DEPS_ROOT/$multiarch/libssl.so"
    "-DCMAKE_CXX_FLAGS=-isystem $DEPS_ROOT/usr/include/x86_64-linux-gnu"
    "-DCMAKE_CUDA_FLAGS=-isystem $DEPS_ROOT/usr/include/x86_64-linux-gnu"
  )
  echo "engine deps: $(find "$debs_dir" -maxdepth 1 -name '*.deb' | wc -l) carried .debs unpacked into $DEPS_ROOT"
}
