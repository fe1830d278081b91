#!/usr/bin/env python3
"""Engine speed on CPU: deepsynth's decoder and vision encoder against HF transformers on the same weights.

Usage: python3 bench/engine.py [--runs 3] [--threads 2] [--skip-build] [--python PY] [--reference-model DIR]
Builds benches/engine.rs (`cargo bench --bench engine --no-run`: the bench profile, opt-level 3), writes the
benchmark decoder's random weights once (bench/engine_baseline.py make-decoder, into target/bench-engine/), then
runs each side in its own process at the same thread count (RAYON_NUM_THREADS for candle, torch.set_num_threads
and OMP_NUM_THREADS for torch):
  - decoder: prefill tokens/s of a 512-token prompt, greedy decode tokens/s (64 new tokens, no early stop), peak
    RSS; both sides must pick the same ids. Beside it, the memory-bandwidth bound: active f32 weight bytes per
    decoded token over the read bandwidth measured by the Rust side (a 1 GiB array summed by the same threads);
  - vision: time per Base 1024 px page through SAM + compressor, CLIP, projector, on the regenerated reference
    model's weights (DEEPSYNTH_REFERENCE_MODEL, else ../refmodel beside the repository), the reference page.
Prints the table and rewrites the engine section of BENCHMARKS.md. Times are medians of RUNS runs after a warm-up.
The Python side needs torch, transformers, safetensors, numpy: PY defaults to this interpreter when it has them,
else /work/venv/bin/python.
"""
import argparse
import datetime
import glob
import json
import os
import statistics
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "bench", "engine_baseline.py")
DECODER_DIR = os.path.join(ROOT, "target", "bench-engine", "decoder")
REFERENCE_IO = os.path.join(ROOT, "..", "shared", "reference", "deepseek-ocr-random-2layer", "io-base-1024.safetensors")
VENV_PYTHON = "/work/venv/bin/python"
sys.path.insert(0, os.path.join(ROOT, "bench"))
from convert import cpu_name, write_section  # noqa: E402


def default_python():
    probe = [sys.executable, "-c", "import torch, transformers, safetensors, numpy"]
    return sys.executable if subprocess.run(probe, capture_output=True).returncode == 0 else VENV_PYTHON


def build():
    """Builds the bench binary; returns its path (cargo names it in its JSON messages)."""
    out = subprocess.run(["cargo", "bench", "--bench", "engine", "--no-run", "--locked",
                          "--message-format=json-render-diagnostics"], cwd=ROOT, check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "engine" and msg.get("executable"):
            return msg["executable"]
    sys.exit("cargo built no `engine` bench executable")


def built():
    """The newest bench binary already built (for --skip-build)."""
    found = [p for p in glob.glob(os.path.join(ROOT, "target", "release", "deps", "engine-*"))
             if os.access(p, os.X_OK) and not p.endswith(".d")]
    if not found:
        sys.exit("no built bench binary under target/release/deps: run without --skip-build")
    return max(found, key=os.path.getmtime)


def run(cmd, threads):
    """Runs one measuring process; returns its RESULT object."""
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    print("$ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}")
    results = [line[len("RESULT "):] for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not results:
        sys.exit(f"no RESULT line from {' '.join(cmd)}:\n{out.stdout}")
    return json.loads(results[-1])


def safetensors_params(path):
    """Parameter count from a safetensors header (8-byte length, then JSON), without loading the tensors."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            n = 1
            for d in info["shape"]:
                n *= d
            total += n
    return total


def active_params(lc):
    """Weights read to decode one token: attention, dense MLPs, per MoE layer the router, the shared experts and
    top-k routed experts, the norms, one embedding row and the lm_head."""
    h, layers = lc["hidden_size"], lc["num_hidden_layers"]
    head_dim = h // lc["num_attention_heads"]
    q, kv = lc["num_attention_heads"] * head_dim, lc["num_key_value_heads"] * head_dim
    attention = 2 * h * q + 2 * h * kv
    moe_width = lc["moe_intermediate_size"]
    moe = lc["n_routed_experts"] * h + 3 * h * moe_width * (lc["n_shared_experts"] + lc["num_experts_per_tok"])
    dense = 3 * h * lc["intermediate_size"]
    n_dense = min(lc["first_k_dense_replace"], layers)
    return layers * (attention + 2 * h) + n_dense * dense + (layers - n_dense) * moe + h + h + lc["vocab_size"] * h


def first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--skip-build", action="store_true", help="use the bench binary already built")
    ap.add_argument("--python", default=None, help="interpreter with torch + transformers (default: see above)")
    ap.add_argument("--reference-model", default=os.environ.get("DEEPSYNTH_REFERENCE_MODEL")
                    or os.path.join(ROOT, "..", "refmodel"))
    ap.add_argument("--io", default=REFERENCE_IO, help="the reference run's tensors (the page's pixels)")
    args = ap.parse_args()
    python = args.python or default_python()
    load_before = os.getloadavg()
    binary = built() if args.skip_build else build()
    if not os.path.exists(os.path.join(DECODER_DIR, "config.json")):
        subprocess.run([python, BASELINE, "make-decoder", DECODER_DIR], check=True)
    runs, threads = ["--runs", str(args.runs)], args.threads

    bw = run([binary, "bandwidth"], threads)
    ours = run([binary, "decoder", DECODER_DIR, "--new-tokens", str(args.new_tokens)] + runs, threads)
    hf = run([python, BASELINE, "decoder", DECODER_DIR, "--new-tokens", str(args.new_tokens),
              "--threads", str(threads)] + runs, threads)
    ours_v = run([binary, "vision", args.reference_model, "--io", args.io] + runs, threads)
    hf_v = run([python, BASELINE, "vision", args.reference_model, args.io, "--threads", str(threads)] + runs, threads)
    load_after = os.getloadavg()

    med = statistics.median
    lc = json.load(open(os.path.join(DECODER_DIR, "config.json")))["language_config"]
    total = safetensors_params(os.path.join(DECODER_DIR, "model.safetensors"))
    active = active_params(lc)
    # The bound is what the machine can do: its fastest read, not the median.
    bandwidth = bw["bytes"] / min(bw["read_s"])  # bytes/s
    bound = bandwidth / (4 * active)
    kv_mib = 2 * lc["num_hidden_layers"] * lc["num_key_value_heads"] * (lc["hidden_size"] // lc[
        "num_attention_heads"]) * 4 * (ours["prompt_len"] + ours["decode_steps"] / 2) / 2**20
    prefill = {k: r["prompt_len"] / med(r["prefill_s"]) for k, r in (("ours", ours), ("hf", hf))}
    decode = {k: r["decode_steps"] / med(r["decode_s"]) for k, r in (("ours", ours), ("hf", hf))}
    diverge = first_difference(ours["ids"], hf["ids"])
    same_ids = "identical" if diverge is None else f"DIFFERENT from position {diverge}"
    page = {k: med(r["page_s"]) for k, r in (("ours", ours_v), ("hf", hf_v))}
    parts = lambda r: ", ".join(f"{k} {v:.1f} s" for k, v in r["parts_s"].items())  # noqa: E731

    rss = lambda r: f"{r['peak_rss_mib']:.0f} MiB"  # noqa: E731
    lines = [
        f"Measured {datetime.date.today()} on {cpu_name()}, {os.cpu_count()} cores, {threads} threads per side; "
        f"median of {args.runs} runs after a warm-up; command: `python3 bench/engine.py --runs {args.runs} "
        f"--threads {threads}`. Load average (1 min) {load_before[0]:.1f} before the run, {load_after[0]:.1f} "
        "after it" + (
            f": **the machine was busy with other work** (more runnable threads than its {os.cpu_count()} cores). "
            "Both sides lose, torch's OpenMP threads far more than rayon's: rerun on a quiet machine before "
            "comparing." if load_before[0] >= 1 else "."),
        "",
        f"Decoder: {total / 1e6:.1f}M parameters ({active / 1e6:.1f}M active per token: hidden "
        f"{lc['hidden_size']}, {lc['num_hidden_layers']} layers, layer 0 dense, {lc['n_routed_experts']} routed "
        f"experts top-{lc['num_experts_per_tok']} + {lc['n_shared_experts']} shared, vocab {lc['vocab_size']}), "
        f"f32, prompt {ours['prompt_len']} tokens, then {ours['decode_steps']} decode steps. transformers: "
        f"`DeepseekOcr2TextModel` + lm_head ({hf['attn']} attention, {hf['experts']} experts), the same loop. "
        f"Greedy ids of the two: {same_ids}.",
        "",
        "| decoder | deepsynth | transformers | deepsynth / transformers |",
        "| --- | --- | --- | --- |",
        f"| prefill, tokens/s | {prefill['ours']:.0f} | {prefill['hf']:.0f} | "
        f"**{prefill['ours'] / prefill['hf']:.2f}x** |",
        f"| decode, tokens/s | {decode['ours']:.1f} | {decode['hf']:.1f} | **{decode['ours'] / decode['hf']:.2f}x** |",
        f"| peak RSS (weights {4 * total / 2**20:.0f} MiB) | {rss(ours)} | {rss(hf)} | "
        f"{ours['peak_rss_mib'] / hf['peak_rss_mib']:.2f} |",
        "",
        f"Bandwidth bound: {4 * active / 1e6:.0f} MB of f32 weights per decoded token; read bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s (fastest of {len(bw['read_s'])} sums of a {bw['bytes'] >> 20} MiB array, "
        f"{bw['threads']} threads) -> at most "
        f"**{bound:.1f} tokens/s**; deepsynth decodes at **{decode['ours'] / bound:.0%}** of it (the KV cache adds "
        f"{kv_mib:.0f} MiB per step on average, not counted). `generate_greedy` (prefill with logits at every "
        f"position, then the same steps) took {ours['generate_greedy_s']:.2f} s against "
        f"{med(ours['prefill_s']) + med(ours['decode_s']):.2f} s for the timed loop.",
        "",
        f"Vision: DeepEncoder on the regenerated reference model's weights (real DeepSeek-OCR dims) and the "
        f"reference page; transformers: `SamVisionModel` + the two compressor convs + `CLIPVisionModel`'s encoder "
        f"fed the SAM features + the linear projector ({hf_v['attn']} attention).",
        "",
        f"| vision, Base 1024 px page ({ours_v['tokens']} tokens) | deepsynth | transformers | speed-up |",
        "| --- | --- | --- | --- |",
        f"| seconds per page | {page['ours']:.2f} | {page['hf']:.2f} | **{page['hf'] / page['ours']:.2f}x** |",
        f"| parts (one run) | {parts(ours_v)} | {parts(hf_v)} | |",
        f"| peak RSS | {rss(ours_v)} | {rss(hf_v)} | {ours_v['peak_rss_mib'] / hf_v['peak_rss_mib']:.2f} |",
        f"| max abs diff to the reference's projector_out | {ours_v['max_abs_diff']:.1e} | "
        f"{hf_v['max_abs_diff']:.1e} | |",
        "",
        "Goals of the engine issue: " + "; ".join(
            f"{name} {'met' if ok else '**not met**'} ({value})" for name, ok, value in [
                ("decode >= 2x transformers:", decode["ours"] >= 2 * decode["hf"],
                 f"{decode['ours'] / decode['hf']:.2f}x"),
                ("decode within 2x of the bandwidth bound:", 2 * decode["ours"] >= bound,
                 f"{decode['ours'] / bound:.0%} of it"),
                ("vision >= 1x transformers:", page["hf"] >= page["ours"], f"{page['hf'] / page['ours']:.2f}x"),
            ]) + ".",
    ]
    table = "\n".join(lines)
    print(table, flush=True)
    write_section("engine", "Engine speed (CPU)", table)
    if diverge is not None:
        sys.exit(f"deepsynth and transformers picked different greedy ids from position {diverge}")


if __name__ == "__main__":
    main()
