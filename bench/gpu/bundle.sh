#!/bin/sh
# bench/gpu/bundle.sh [BUILD_DIR] - prepare the GPU check on this machine.
#
# The GPU machine (Ubuntu 24.04, CUDA 13, PyTorch as python3) has no
# compiler toolchain for surge and lacks libzmq, libuv, msgpack-c, GSL,
# http-parser and cmocka. So: build here with --with-cuda (BUILD_DIR,
# default build/, must be configured with it), install into a staging
# prefix, and lay out BUILD_DIR/gpu-bundle like a build tree (cli/surge,
# solvers/heat2d/surge-heat2d, the GPU tests, bench-trainer-cuda) plus lib/
# holding libsurge and every shared library those programs need that the
# GPU machine lacks. Carry BUILD_DIR/gpu-bundle with the repository and run
# bench/gpu/run.sh there. (The library list is the one measured there, see
# the header of the project's device-bundle notes: libzmq, libuv,
# msgpack-c, GSL, http-parser, cmocka, libsodium, libpgm, libnorm; jansson
# and libpng travel too, being small.)
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
die() { echo "bundle.sh: $*" >&2; exit 1; }
grep -q '^#define HAVE_CUDA 1' "$build/config.h" 2>/dev/null ||
    die "$build is not configured --with-cuda (../configure --with-cuda)"
progs="tests/unit/trainer/test_backend_cuda tests/unit/trainer/test_backend
bench/gpu/bench-trainer-cuda tests/unit/reservoir/test_reservoir_cuda
bench/reservoir/bench-reservoir-feed"
make -C "$build" -j2 all $progs >/dev/null || die "build failed"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
make -C "$build" install DESTDIR="$stage" prefix=/opt/surge >/dev/null ||
    die "make install failed"
out=$build/gpu-bundle
rm -rf "$out"
mkdir -p "$out/lib" "$out/server" "$out/solvers/heat2d"
cp -L "$stage/opt/surge/bin/surge" "$out/cli/surge"
cp -L "$stage/opt/surge/bin/surge-heat2d" "$out/solvers/heat2d/surge-heat2d"
cp -L "$stage"/opt/surge/lib/libsurge.so* "$out/lib/" 2>/dev/null || true
for p in $progs; do
    mkdir -p "$out/$(dirname "$p")"
    cp -L "$build/$p" "$out/$p"
done
missing='libzmq\.so|libuv\.so|libmsgpack|libgsl|libhttp_parser|libcmocka'
missing="$missing|libsodium|libpgm|libnorm|libjansson|libpng16"
find "$out" -type f -perm -u+x | while read -r f; do
    LD_LIBRARY_PATH="$out/lib" ldd "$f" 2>/dev/null |
        awk '$3 ~ /^\// {print $3}'
done | sort -u | grep -E "$missing" | while read -r lib; do
    cp -L -n "$lib" "$out/lib/"
done
du -sh "$out"
