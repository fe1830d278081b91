#!/usr/bin/env bash
# Builds the CUDA binaries here (no GPU needed) and checks them on a GPU machine that has no Rust.
#
#   scripts/cuda_check.sh pack   # here: `deepsynth` and the tests/cuda.rs test binary, built with --features cuda
#                                #   (toolkit from scripts/cuda_toolchain.sh, CARGO_TARGET_DIR default
#                                #   /work/target-cuda), stripped and gzipped, into target/cuda-check/
#   scripts/cuda_check.sh run    # there, from a copy of this repo with target/cuda-check/ beside it: finds the
#                                #   CUDA 13 libraries, shows what the binary loads (ldd), runs the GPU tests
#   scripts/cuda_check.sh serve  # there, after `run`: `deepsynth serve --device cuda` under bench/serve.py's load
#                                #   (tiny model, batched against unbatched, cached against uncached; tables printed)
#
# The binaries link libcuda.so.1 (the driver) and libcudart/libcublas/libcublasLt/libnvrtc (.so.13), libcurand
# (.so.10) by name: `run` finds them in torch's wheels (site-packages/nvidia/cu13/lib), /usr/local/cuda/lib64 or
# CUDA_LIB_DIR. The test binary reads the fixtures under tests/fixtures/ at the path it was built from, so `run`
# links that path to this checkout when it is elsewhere.
# With the device tool: `pack` in the checkout that the tool copies, then run `bash scripts/cuda_check.sh run` there
# with carry ["target/cuda-check"] (~25 MB). On an H200 (driver 580, torch 2.11+cu130) the 4 tests take ~15 s.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/cuda-check

cuda_libraries() {
    libs="${CUDA_LIB_DIR:-}"
    for py in python3 python; do
        dir="$("$py" -c 'import nvidia, os
print(":".join(p + "/cu13/lib" for p in nvidia.__path__ if os.path.isdir(p + "/cu13/lib")))' 2>/dev/null)" || continue
        libs="$libs:$dir"
        break
    done
    [ -d /usr/local/cuda/lib64 ] && libs="$libs:/usr/local/cuda/lib64"
    export LD_LIBRARY_PATH="${libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
}

case "${1:-}" in
pack)
    # shellcheck source=scripts/cuda_toolchain.sh
    source scripts/cuda_toolchain.sh
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-cuda}"
    cargo build --release --features cuda --bin deepsynth
    test_bin="$(cargo test --release --features cuda --test cuda --no-run --message-format json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')"
    mkdir -p "$out"
    # Compressed: the embedded PTX makes each binary ~50 MB, over what a device run carries.
    strip -o "$out/deepsynth" "$CARGO_TARGET_DIR/release/deepsynth"
    strip -o "$out/cuda-tests" "$test_bin"
    gzip -f "$out/deepsynth" "$out/cuda-tests"
    pwd >"$out/source-dir"
    ls -l "$out"
    ;;
run)
    cuda_libraries
    nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv || true
    gunzip -kf "$out/deepsynth.gz" "$out/cuda-tests.gz"
    ldd "$out/cuda-tests"
    "$out/deepsynth" --help >/dev/null && echo "deepsynth starts"
    src="$(cat "$out/source-dir")"
    if [ ! -e "$src" ]; then
        mkdir -p "$(dirname "$src")"
        ln -s "$(pwd)" "$src"
    fi
    "$out/cuda-tests" --test-threads 1 --nocapture
    ;;
serve)
    cuda_libraries
    gunzip -kf "$out/deepsynth.gz"
    python3 bench/serve.py --skip-build --binary "$out/deepsynth" --device cuda --models tiny \
        --seconds "${SECONDS_PER_LOAD:-20}" --no-write
    ;;
*)
    sed -n '2,14p' "$0"
    exit 2
    ;;
esac
