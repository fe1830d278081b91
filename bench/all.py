#!/usr/bin/env python3
"""Every benchmark the issues ask for, in one run, each with its Python baseline, each rewriting its own section of
BENCHMARKS.md (machine, command, date, median of N runs, ratio).

Usage: python3 bench/all.py [--runs 3] [--only convert,engine,train]
Runs, in order: bench/convert.py (dataset converters vs plain Python), bench/engine.py (decoder prefill/decode and
vision encoder vs transformers, with the memory-bandwidth bound), bench/train.py (training samples/s vs PyTorch +
PEFT, and the quickstart's held-out metrics against wall time) when present. Stops at the first failure.
Run it on a quiet machine: every figure is a wall-clock measurement.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = ["convert", "engine", "train", "serve"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset of " + ", ".join(BENCHMARKS))
    args = ap.parse_args()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    for name in chosen:
        script = os.path.join(HERE, f"{name}.py")
        if not os.path.isfile(script):
            print(f"== {name}: {script} is not there, skipped", flush=True)
            continue
        print(f"== {name}", flush=True)
        code = subprocess.run([sys.executable, script, "--runs", str(args.runs)]).returncode
        if code != 0:
            sys.exit(f"{name} failed (exit {code})")


if __name__ == "__main__":
    main()
