# shellcheck shell=bash
# A CUDA 13.0 toolkit for `cargo build --features cuda` on a machine without a GPU or a system CUDA install.
#
# Usage, from anywhere in the repo:
#   source scripts/cuda_toolchain.sh    # installs if needed, then exports the variables below into this shell
#   bash scripts/cuda_toolchain.sh      # installs if needed, then prints the `export` lines
#   CARGO_TARGET_DIR=/work/target-cuda cargo build --release --features cuda
#
# What it does: downloads NVIDIA's PyPI wheels of CUDA 13.0 update 2 (nvcc, cicc, headers, cudart, cuBLAS, cuRAND,
# NVRTC) with pip and unpacks them into .cuda-toolkit/ (git-ignored). The versions are the ones torch's cu130 wheels
# pin, so the libraries the binary links against are the ones a CUDA 13.0 GPU machine with torch already has.
# Why each piece is needed:
#   - candle-kernels compiles its .cu files with nvcc (PTX, plus a static MoE library of sm_90 code);
#     CUDA_COMPUTE_CAP=90 picks the target, since there is no nvidia-smi here to ask.
#   - candle-core turns on cudarc's `dynamic-linking`, so the final link needs -lcuda -lcublas -lcublasLt -lcurand
#     -lnvrtc -lcudart. The wheels ship only versioned files (libcublas.so.13), so we add the unversioned links;
#     libcuda is the driver and ships with no wheel, so we build a stub (SONAME libcuda.so.1) that defines every
#     driver function cudarc declares: at run time the GPU machine's real driver library is loaded instead.
#   - CUDARC_CUDA_VERSION=13000 binds cudarc to the 13.0 API (it would otherwise parse `nvcc --version`).
# Override the location with CUDA_TOOLKIT_DIR, the Python with PYTHON.

_cuda_toolchain_main() {
    local repo dir root py
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    dir="${CUDA_TOOLKIT_DIR:-$repo/.cuda-toolkit}"
    root="$dir/nvidia/cu13"
    py="${PYTHON:-python3}"

    if [ ! -x "$root/bin/nvcc" ] || [ ! -e "$root/lib/stubs/libcuda.so" ]; then
        echo "cuda_toolchain: installing CUDA 13.0 wheels into $dir" >&2
        local wheels="$dir/wheels"
        mkdir -p "$wheels" || return 1
        "$py" -m pip download --quiet --no-deps --dest "$wheels" \
            nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 \
            nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.1.0.3 \
            nvidia-curand==10.4.0.35 || return 1
        local w
        for w in "$wheels"/*.whl; do
            unzip -q -o "$w" 'nvidia/*' -d "$dir" || return 1
        done
        # The wheels' files are all that is needed; keep the folder small.
        rm -rf "$wheels"

        # -lNAME needs libNAME.so; cudaforge looks for libraries in lib64.
        local so
        for so in "$root"/lib/lib*.so.*; do
            case "$so" in *.alt.so.* | *-builtins*) continue ;; esac
            ln -sf "$(basename "$so")" "$root/lib/$(basename "$so" | sed 's/\.so\..*/.so/')"
        done
        ln -sfn lib "$root/lib64"

        # The driver stub: one function per driver entry point cudarc can call, each failing with
        # CUDA_ERROR_STUB_LIBRARY (34) as NVIDIA's own stubs do. The names come from cudarc's bindings, so the
        # stub always matches the cudarc version in Cargo.lock.
        local cudarc
        cudarc="$(cd "$repo" && cargo metadata --format-version 1 --features cuda 2>/dev/null |
            "$py" -c 'import json,sys
print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')" ||
            {
                echo "cuda_toolchain: cannot find cudarc's sources (cargo metadata)" >&2
                return 1
            }
        mkdir -p "$root/lib/stubs" || return 1
        grep -oE '^ *fn cu[A-Za-z0-9_]+\(' "$(dirname "$cudarc")/src/driver/sys/mod.rs" |
            sed -E 's/^ *fn (cu[A-Za-z0-9_]+)\(/int \1(void) { return 34; }/' | sort -u >"$root/lib/stubs/libcuda_stub.c"
        cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$root/lib/stubs/libcuda_stub.c" ||
            return 1
    fi

    _cuda_toolchain_exports="export CUDA_HOME=$root
export PATH=$root/bin:\$PATH
export CUDA_COMPUTE_CAP=90
export CUDARC_CUDA_VERSION=13000"
}

if _cuda_toolchain_main; then
    if [ "${BASH_SOURCE[0]}" != "$0" ]; then
        eval "$_cuda_toolchain_exports"
        echo "cuda_toolchain: CUDA_HOME=$CUDA_HOME; nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')" >&2
    else
        echo "$_cuda_toolchain_exports"
    fi
    unset _cuda_toolchain_exports
else
    echo "cuda_toolchain: failed" >&2
    # Sourced: return without closing the caller's shell; run: exit non-zero.
    return 1 2>/dev/null || exit 1
fi
