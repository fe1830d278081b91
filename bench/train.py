#!/usr/bin/env python3
"""Training speed on CPU: `deepsynth train` (LoRA) against PyTorch + PEFT on the same decoder weights and batches,
and the quickstart's held-out scores against its wall time.

Usage: python3 bench/train.py [--runs 3] [--threads 2] [--quickstart-steps 100 300] [--skip-build] [--python PY]
Builds the release binary, then in target/bench-train/: 64 synthetic cards (`deepsynth data synth --count 64`), the
tiny preset (`deepsynth init --preset tiny`) and a mid-size model (bench/train_baseline.py make-mid: the tiny
vision, a ~60M-parameter decoder). For each model, each side in its own process at the same thread count
(RAYON_NUM_THREADS; torch.set_num_threads and OMP_NUM_THREADS): LoRA r 8, alpha 16, dropout 0 on every attention,
MLP and expert projection, batch 8, AdamW lr 2e-4 with linear decay, clipping at 1.0, RUNS + 1 epochs of the
cards. Samples/s are per epoch (8 steps): the first epoch is warm-up (on our side it also encodes each card's page,
whose visual tokens are then cached, the vision being frozen); the table gives the median of the RUNS later ones.
Peak RSS is the whole process's maximum resident set (wait4). Then `deepsynth quickstart --steps S` for each S:
its held-out exact match, F1, CER and answer-kind rate, and its wall time. Prints the tables and rewrites the
training section of BENCHMARKS.md. PY (the torch side) defaults to this interpreter when it has torch + peft, else
/work/venv/bin/python.
"""
import argparse
import datetime
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench-train")
BASELINE = os.path.join(ROOT, "bench", "train_baseline.py")
VENV_PYTHON = "/work/venv/bin/python"
CARDS, BATCH = 64, 8
sys.path.insert(0, os.path.join(ROOT, "bench"))
from convert import cpu_name, write_section  # noqa: E402

TRAIN_TOML = """model = "{model}"
train_file = "{cards}"
output_dir = "{run}"
seed = 42
method = "lora"
per_device_train_batch_size = {batch}
max_steps = {steps}
learning_rate = 2e-4
lr_scheduler_type = "linear"
max_grad_norm = 1.0
logging_steps = {window}
save_steps = 0

[lora]
r = 8
lora_alpha = 16.0
lora_dropout = 0.0
"""


def default_python():
    probe = [sys.executable, "-c", "import torch, transformers, peft, safetensors"]
    return sys.executable if subprocess.run(probe, capture_output=True).returncode == 0 else VENV_PYTHON


def measured(cmd, threads):
    """Runs cmd; returns (stdout, wall seconds, peak RSS MiB of the process, from wait4)."""
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    print("$ " + " ".join(cmd), flush=True)
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{text}")
    return text, wall, usage.ru_maxrss / 1024


def header(path):
    """A safetensors file's tensor entries (name -> dtype, shape, offsets), read without the tensors."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return {n: v for n, v in json.loads(f.read(size)).items() if n != "__metadata__"}


def parameters(path):
    return sum(math.prod(v["shape"]) for v in header(path).values())


def ours(binary, model, cards, name, steps, threads):
    """`deepsynth train` on a LoRA config; samples/s and mean loss of each logged window (one epoch each)."""
    folder = os.path.join(WORK, name)
    run = os.path.join(folder, "run")
    shutil.rmtree(run, ignore_errors=True)
    config = os.path.join(folder, "train.toml")
    with open(config, "w") as f:
        f.write(TRAIN_TOML.format(model=model, cards=cards, run=run, batch=BATCH, steps=steps, window=CARDS // BATCH))
    _, wall, rss = measured([binary, "train", "--config", config], threads)
    with open(os.path.join(run, "train_log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    adapter = os.path.join(run, "final", "adapter_model.safetensors")
    return {"samples_per_second": [e["samples_per_second"] for e in log if "samples_per_second" in e],
            "window_loss": [e["loss"] for e in log if "loss" in e], "peak_rss_mib": rss, "wall_s": wall,
            "trainable_parameters": parameters(adapter),
            "adapted_layers": sum(n.endswith("lora_A.weight") for n in header(adapter))}


def theirs(python, model, cards, steps, threads):
    text, wall, rss = measured([python, BASELINE, "train", model, cards, "--steps", str(steps), "--window",
                                str(CARDS // BATCH), "--batch", str(BATCH), "--threads", str(threads)], threads)
    results = [line[len("RESULT "):] for line in text.splitlines() if line.startswith("RESULT ")]
    if not results:
        sys.exit(f"no RESULT line from the baseline:\n{text}")
    return {**json.loads(results[-1]), "peak_rss_mib": rss, "wall_s": wall}


SCORES = re.compile(r"(before|after): exact match ([\d.]+)%, F1 ([\d.]+), character error rate ([\d.]+)%, "
                    r"answers of the asked kind ([\d.]+)%")


def quickstart(binary, steps, threads):
    out_dir = os.path.join(WORK, f"quickstart-{steps}")
    text, wall, rss = measured([binary, "quickstart", "--output", out_dir, "--steps", str(steps)], threads)
    scores = {m[1]: [float(x) for x in m.groups()[1:]] for m in SCORES.finditer(text)}
    training = re.search(r"training loss ([\d.]+) -> ([\d.]+), best held-out loss ([\d.]+), (\d+) s", text)
    if len(scores) != 2 or not training:
        sys.exit(f"cannot read the quickstart's output:\n{text}")
    return {"steps": steps, "wall_s": wall, "peak_rss_mib": rss, "before": scores["before"],
            "after": scores["after"], "train_s": float(training[4]), "best_loss": float(training[3])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="timed epochs (8 steps each) after the warm-up epoch")
    ap.add_argument("--quickstart-steps", type=int, nargs="*", default=[100, 300])
    ap.add_argument("--skip-build", action="store_true", help="use target/release/deepsynth as it is")
    ap.add_argument("--python", default=None, help="interpreter with torch + transformers + peft")
    args = ap.parse_args()
    python = args.python or default_python()
    threads, started = args.threads, time.perf_counter()
    load_before = os.getloadavg()
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "deepsynth")
    os.makedirs(WORK, exist_ok=True)
    cards = os.path.join(WORK, "cards.jsonl")
    tiny, mid = os.path.join(WORK, "tiny"), os.path.join(WORK, "mid")
    if not os.path.exists(cards):
        subprocess.run([binary, "data", "synth", "--count", str(CARDS), "--seed", "0", "--output", cards], check=True)
    if not os.path.exists(os.path.join(tiny, "config.json")):
        subprocess.run([binary, "init", "--preset", "tiny", "--output", tiny], check=True)
    if not os.path.exists(os.path.join(mid, "config.json")):
        subprocess.run([python, BASELINE, "make-mid", tiny, mid], check=True)

    rows = []
    steps = (args.runs + 1) * CARDS // BATCH
    for name, model in (("tiny", tiny), ("mid", mid)):
        a = ours(binary, model, cards, name, steps, threads)
        b = theirs(python, model, cards, steps, threads)
        if a["trainable_parameters"] != b["trainable_parameters"]:
            sys.exit(f"{name}: {a['trainable_parameters']} LoRA parameters here, {b['trainable_parameters']} in PEFT")
        rows.append((name, model, a, b))
    qs = [quickstart(binary, steps, threads) for steps in args.quickstart_steps]
    load_after = os.getloadavg()

    med = lambda r: statistics.median(r["samples_per_second"][1:])  # noqa: E731
    fmt = lambda r: ", ".join(f"{x:.1f}" for x in r["samples_per_second"][1:])  # noqa: E731
    lines = [
        f"Measured {datetime.date.today()} on {cpu_name()}, {os.cpu_count()} cores, {threads} threads per side; "
        f"median of {args.runs} epochs after a warm-up epoch; command: `python3 bench/train.py --runs {args.runs} "
        f"--threads {threads} --quickstart-steps {' '.join(map(str, args.quickstart_steps))}` "
        f"({time.perf_counter() - started:.0f} s in all). Load average (1 min) {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after" + (
            f": **the machine was busy with other work** (more runnable threads than its {os.cpu_count()} "
            "cores); rerun on a quiet machine before comparing." if load_before[0] >= 1 else "."),
        "",
        "| model (decoder) | LoRA parameters (layers) | deepsynth samples/s | PyTorch + PEFT samples/s | "
        "deepsynth / PyTorch | peak RSS deepsynth | peak RSS PyTorch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, model, a, b in rows:
        lc = json.load(open(os.path.join(model, "config.json")))["language_config"]
        decoder = b["decoder_parameters"]
        lines.append(
            f"| {name} ({decoder / 1e6:.1f}M: hidden {lc['hidden_size']}, {lc['num_hidden_layers']} layers, "
            f"{lc['n_routed_experts']} experts top-{lc['num_experts_per_tok']} + {lc['n_shared_experts']} shared) "
            f"| {a['trainable_parameters'] / 1e6:.2f}M ({a['adapted_layers']}) | **{med(a):.1f}** (epochs 2+: "
            f"{fmt(a)}; epoch 1 {a['samples_per_second'][0]:.1f}) | **{med(b):.1f}** ({fmt(b)}; epoch 1 "
            f"{b['samples_per_second'][0]:.1f}) | **{med(a) / med(b):.2f}x** | {a['peak_rss_mib']:.0f} MiB | "
            f"{b['peak_rss_mib']:.0f} MiB |")
    lines += [
        "",
        "Mean training loss of the first and last epoch (a check that both sides train; the torch side's visual "
        "rows are random, ours are the rendered cards'): " + "; ".join(
            f"{name}: deepsynth {a['window_loss'][0]:.3f} -> {a['window_loss'][-1]:.3f}, PyTorch "
            f"{b['window_loss'][0]:.3f} -> {b['window_loss'][-1]:.3f}" for name, _, a, b in rows) + ".",
        "",
        "Goal of the training issue (deepsynth / PyTorch + PEFT >= 1.0): " + "; ".join(
            f"{name} {'met' if med(a) >= med(b) else '**not met**'} ({med(a) / med(b):.2f}x)"
            for name, _, a, b in rows) + ".",
        "",
        "Quickstart (`deepsynth quickstart --steps S`: tiny model, full fine-tuning from scratch, batch 8, held-out "
        "synthetic cards; wall time of the whole command: init, data, two evaluations, training):",
        "",
        "| steps | wall time | of which training | exact match | F1 | CER | answers of the asked kind | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        "| 0 (untrained) | | | {:.1f}% | {:.1f} | {:.1f}% | {:.1f}% | |".format(*qs[0]["before"]) if qs else "",
    ]
    for q in qs:
        em, f1, cer, kind = q["after"]
        lines.append(f"| {q['steps']} | {q['wall_s']:.0f} s | {q['train_s']:.0f} s | {em:.1f}% | {f1:.1f} | "
                     f"{cer:.1f}% | {kind:.1f}% | {q['peak_rss_mib']:.0f} MiB |")
    table = "\n".join(lines)
    print(table, flush=True)
    write_section("train", "Training (CPU)", table)


if __name__ == "__main__":
    main()
