#!/usr/bin/env python3
"""Converter throughput: `deepsynth convert` vs a plain-Python converter of the same mapping, on the same files.

Usage: python3 bench/convert.py [--runs 3] [--data target/bench-data]
Builds the release binary, generates synthetic files in the real formats (bench/gen_convert_data.py), runs each
converter RUNS times under /usr/bin/time, checks that both outputs hold the same records, and rewrites the
converter table of BENCHMARKS.md (median wall time, MB/s of input, peak RSS, ratio).
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [  # (label, dataset, file)
    ("SQuAD v2.0 (train-sized)", "squad", "squad-train-v2.0.json"),
    ("MS MARCO v2.1 (columnar)", "marco", "marco-v2.1.json"),
    ("MS MARCO v1.1 (JSONL, streaming)", "marco", "marco-v1.1.jsonl"),
    ("NQ original (JSONL, streaming)", "nq", "nq-original.jsonl"),
]


def timed(cmd):
    """Wall seconds and peak RSS (MiB) of one run, started with no dirty pages pending from earlier runs."""
    os.sync()
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    wall, rss_kib = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss_kib) / 1024


def same_records(a, b):
    with open(a, encoding="utf-8") as fa, open(b, encoding="utf-8") as fb:
        ra = [json.loads(line) for line in fa]
        rb = [json.loads(line) for line in fb]
    key = lambda r: r["id"]
    return sorted(ra, key=key) == sorted(rb, key=key), len(ra)


def write_section(key, heading, table):
    """Replaces the `<!-- KEY:start -->` ... `<!-- KEY:end -->` block of BENCHMARKS.md with `table` (appending it
    under `## HEADING` the first time). The one writer every bench script shares."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n"
    block = f"<!-- {key}:start -->\n{table}\n<!-- {key}:end -->"
    if f"<!-- {key}:start -->" in text:
        text = re.sub(rf"<!-- {key}:start -->.*?<!-- {key}:end -->", lambda _: block, text, flags=re.S)
    else:
        text += f"\n## {heading}\n\n{block}\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", default=os.path.join(ROOT, "target", "bench-data"))
    # Outputs go to memory (tmpfs) where there is one, so that the disk's writeback speed is not what is measured.
    ap.add_argument("--out", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--skip-build", action="store_true", help="use target/release/deepsynth as it is")
    args = ap.parse_args()
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "deepsynth")
    if not os.path.exists(os.path.join(args.data, CASES[-1][2])):
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gen_convert_data.py"), args.data], check=True)
    rows = []
    for label, dataset, name in CASES:
        src = os.path.join(args.data, name)
        mb = os.path.getsize(src) / 1e6
        base = os.path.join(args.out, name) if args.out else src
        out_rs, out_py = base + ".rs.jsonl", base + ".py.jsonl"
        rs = [timed([binary, "convert", dataset, "--input", src, "--output", out_rs]) for _ in range(args.runs)]
        py = [timed([sys.executable, os.path.join(ROOT, "bench", "convert_baseline.py"), dataset, src, out_py])
              for _ in range(args.runs)]
        same, n = same_records(out_rs, out_py)
        if not same:
            sys.exit(f"{label}: deepsynth and the Python baseline wrote different records")
        t_rs = statistics.median(w for w, _ in rs)
        t_py = statistics.median(w for w, _ in py)
        rss_rs = statistics.median(r for _, r in rs)
        rss_py = statistics.median(r for _, r in py)
        rows.append(f"| {label} | {mb:.1f} | {n:,} | {t_rs:.2f} s, {mb / t_rs:.0f} MB/s, {rss_rs:.0f} MiB | "
                    f"{t_py:.2f} s, {mb / t_py:.1f} MB/s, {rss_py:.0f} MiB | **{t_py / t_rs:.1f}x** | "
                    f"{rss_rs / mb:.2f} |")
        print(rows[-1], flush=True)
        os.remove(out_rs)
        os.remove(out_py)
    table = "\n".join([
        f"Measured {datetime.date.today()} on {cpu_name()}, {os.cpu_count()} cores; median of {args.runs} runs; "
        f"outputs written to {args.out or 'the data folder'}; command: `python3 bench/convert.py`. Both converters "
        "write the same records (checked by the script).",
        "",
        "| input | MB | records | deepsynth (time, input MB/s, peak RSS) | Python json baseline | speed-up | "
        "deepsynth RSS / input MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
    write_section("convert", "Dataset conversion", table)

if __name__ == "__main__":
    main()
