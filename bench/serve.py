#!/usr/bin/env python3
"""Serving under load: `deepsynth serve` with 32 concurrent clients, batched against unbatched, and a cached
follow-up question against the first question about a page.

Usage: python3 bench/serve.py [--clients 32] [--seconds 30] [--skip-build] [--python PY] [--reference DIR]
Builds the release binary, then in target/bench-serve/: 64 synthetic cards (`deepsynth data synth`), the tiny preset
and the mid-size model of bench/train.py (bench/train_baseline.py make-mid: the tiny vision, a ~60M-parameter
decoder; needs an interpreter with torch, PY). For each model and each of `--max-batch 32` (batched) and
`--max-batch 1` (unbatched, one request decoded at a time), a fresh server on a free loopback port; every card's
page is asked about once (the visual-token cache is then warm, so the load measures the decoder), then CLIENTS
threads, each with its own keep-alive connection, ask random questions about random cards (greedy, 16 new tokens)
for SECONDS: requests/s, generated tokens/s, p50/p99 latency, errors (any status but 200), and the mean batch the
engine ran during the load. Then, on a fresh unbatched server, for 16 new cards: the first question's latency
(vision encoder + answer) and a follow-up's about the same card (cached visual tokens); medians and their ratio;
also on --reference (DeepSeek-OCR's real vision encoder) when given. Prints the tables and rewrites the serving section
of BENCHMARKS.md. Every figure is wall-clock: run it on a quiet machine.
"""
import argparse
import datetime
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench-serve")
BASELINE = os.path.join(ROOT, "bench", "train_baseline.py")
TOKENS = 16
sys.path.insert(0, os.path.join(ROOT, "bench"))
from convert import cpu_name, write_section  # noqa: E402
from train import default_python  # noqa: E402


DEVICE = "cpu"


class Server:
    def __init__(self, binary, model, *args):
        self.proc = subprocess.Popen([binary, "serve", "--model", model, "--port", "0", "--device", DEVICE, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"http://([\d.]+):(\d+)", line)
        if not match:
            sys.exit(f"serve printed {line!r}")
        self.host, self.port = match[1], int(match[2])
        for _ in range(600):
            try:
                if self.request("GET", "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit("the server never became ready")

    def connection(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=600)

    def request(self, method, path, body=None, conn=None):
        conn = conn or self.connection()
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def ask(card, rng):
    return {"document": card["text"], "instruction": rng.choice(card["questions"]), "max_length": TOKENS,
            "temperature": 0}


def load(server, cards, clients, seconds):
    """CLIENTS closed-loop clients for SECONDS; latencies of completed requests, errors, tokens."""
    latencies, errors, tokens = [], [], [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(seed):
        rng = random.Random(seed)
        conn = server.connection()
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                status, body = server.request("POST", "/api/inference/instruct", ask(rng.choice(cards), rng), conn)
            except OSError as e:
                status, body = -1, str(e).encode()
                conn = server.connection()
            elapsed = time.perf_counter() - start
            with lock:
                if status == 200:
                    latencies.append(elapsed)
                    tokens[0] += json.loads(body)["tokens_generated"]
                else:
                    errors.append((status, body[:200]))

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")  # noqa
    return {"requests": len(latencies), "rps": len(latencies) / wall, "tokens_per_s": tokens[0] / wall,
            "p50": pct(0.50), "p99": pct(0.99), "errors": len(errors), "error_sample": errors[:3], "wall": wall}


def batch_totals(server):
    """(requests, batches) the engine has run so far."""
    text = server.request("GET", "/metrics")[1].decode()
    value = lambda name: float(re.search(rf"^{name} (\S+)$", text, re.M)[1])  # noqa: E731
    return value("deepsynth_batch_size_sum"), value("deepsynth_batch_size_count")


def cached_vs_uncached(binary, model, cards):
    server = Server(binary, model, "--max-batch", "1")
    first, follow = [], []
    rng = random.Random(1)
    conn = server.connection()
    for card in cards:
        for times in (first, follow):
            start = time.perf_counter()
            status, body = server.request("POST", "/api/inference/instruct", ask(card, rng), conn)
            times.append(time.perf_counter() - start)
            if status != 200:
                sys.exit(f"cached-vs-uncached request failed: {status} {body[:200]}")
            if json.loads(body)["cached"] != (times is follow):
                sys.exit("the follow-up was not served from the cache (or the first was)")
    server.stop()
    return statistics.median(first), statistics.median(follow)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--runs", type=int, default=1, help="accepted for bench/all.py; one load run per setting")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--python", default=None)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "deepsynth"),
                    help="the deepsynth to serve with (e.g. a CUDA build on a GPU machine)")
    ap.add_argument("--device", default="cpu", help="serve --device (cpu, cuda)")
    ap.add_argument("--models", default="tiny,mid", help="which of tiny, mid to load-test (mid needs torch to make)")
    ap.add_argument("--no-write", action="store_true", help="print the tables without rewriting BENCHMARKS.md")
    ap.add_argument("--reference", default=os.environ.get("DEEPSYNTH_REFERENCE_MODEL"),
                    help="also time first vs cached questions on this model directory (default: "
                         "$DEEPSYNTH_REFERENCE_MODEL; scripts/regen_reference_weights.py makes it: DeepSeek-OCR's "
                         "real vision encoder, Base 1024, with a 2-layer decoder)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    python = args.python or default_python()
    started, load_before = time.perf_counter(), os.getloadavg()
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    binary = args.binary
    os.makedirs(WORK, exist_ok=True)
    cards_path = os.path.join(WORK, "cards.jsonl")
    if not os.path.exists(cards_path):
        subprocess.run([binary, "data", "synth", "--count", "96", "--seed", "3", "--output", cards_path], check=True)
    by_text = {}
    for line in open(cards_path):
        record = json.loads(line)
        by_text.setdefault(record["text"], []).append(record["instruction"])
    cards = [{"text": t, "questions": q} for t, q in by_text.items()]
    pool, fresh = cards[:64], cards[64:80]
    tiny, mid = os.path.join(WORK, "tiny"), os.path.join(WORK, "mid")
    if not os.path.exists(os.path.join(tiny, "config.json")):
        subprocess.run([binary, "init", "--preset", "tiny", "--output", tiny], check=True)
    models = [(n, m) for n, m in (("tiny", tiny), ("mid", mid)) if n in args.models.split(",")]
    if "mid" in args.models.split(",") and not os.path.exists(os.path.join(mid, "config.json")):
        subprocess.run([python, BASELINE, "make-mid", tiny, mid], check=True)

    rows, cache_rows = [], []
    for name, model in models:
        results = {}
        for mode, batch in (("batched", "32"), ("unbatched", "1")):
            server = Server(binary, model, "--max-batch", batch, "--max-queue", "64")
            for card in pool:  # warm the visual-token cache
                server.request("POST", "/api/inference/instruct", {**ask(card, random.Random(0)), "max_length": 1})
            print(f"{name} {mode}: {args.clients} clients for {args.seconds:.0f} s", flush=True)
            requests_before, batches_before = batch_totals(server)
            result = load(server, pool, args.clients, args.seconds)
            requests_after, batches_after = batch_totals(server)
            mean_batch = (requests_after - requests_before) / max(1.0, batches_after - batches_before)
            results[mode] = {**result, "mean_batch": mean_batch}
            server.stop()
            print(f"  {results[mode]}", flush=True)
        rows.append((name, results))
        first, follow = cached_vs_uncached(binary, model, fresh)
        cache_rows.append((name, first, follow))
        print(f"{name}: first question {first * 1e3:.0f} ms, cached follow-up {follow * 1e3:.0f} ms", flush=True)
    if args.reference:
        first, follow = cached_vs_uncached(binary, args.reference, fresh[:4])
        cache_rows.append(("reference (DeepSeek-OCR vision, Base 1024; 2-layer decoder)", first, follow))
        print(f"reference: first question {first * 1e3:.0f} ms, cached follow-up {follow * 1e3:.0f} ms", flush=True)
    load_after = os.getloadavg()

    lines = [
        f"Measured {datetime.date.today()} on {cpu_name()}, {os.cpu_count()} cores (server, its engine and the "
        f"client threads share them); command: `python3 bench/serve.py --clients {args.clients} --seconds "
        f"{args.seconds:.0f}` ({time.perf_counter() - started:.0f} s in all). Release build, greedy answers of "
        f"{TOKENS} tokens (the untrained models never stop early, so every answer is {TOKENS} tokens), questions "
        f"about 64 synthetic cards whose visual tokens were cached beforehand. Load average (1 min) "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        "| model | server | requests/s | tokens/s | p50 latency | p99 latency | errors | mean batch | "
        "batched / unbatched |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, results in rows:
        b, u = results["batched"], results["unbatched"]
        for mode, r in (("batched (--max-batch 32)", b), ("unbatched (--max-batch 1)", u)):
            ratio = f"**{b['rps'] / u['rps']:.1f}x**" if r is b else ""
            lines.append(f"| {name} | {mode} | {r['rps']:.1f} | {r['tokens_per_s']:.0f} | {r['p50'] * 1e3:.0f} ms | "
                         f"{r['p99'] * 1e3:.0f} ms | {r['errors']} | {r['mean_batch']:.1f} | {ratio} |")
    lines += [
        "",
        "First question about a page (vision encoder + answer) against a follow-up about the same page (visual "
        "tokens from the cache), one client, median of 16 new cards (4 for the reference model). The tiny and mid "
        "models share the tiny preset's vision encoder (a 512-pixel page, ~60 ms); DeepSeek-OCR's own encoder is "
        "the reference row's:",
        "",
        "| model | first question | cached follow-up | speed-up |",
        "| --- | --- | --- | --- |",
    ]
    for name, first, follow in cache_rows:
        lines.append(f"| {name} | {first * 1e3:.0f} ms | {follow * 1e3:.0f} ms | **{first / follow:.1f}x** |")
    goal_batch = all(r["batched"]["rps"] >= 3 * r["unbatched"]["rps"] for _, r in rows)
    goal_cache = "; ".join(f"{name.split(' ')[0]} {first / follow:.1f}x ({'met' if first >= 5 * follow else '**not met**'})"
                           for name, first, follow in cache_rows)
    errors = sum(r[m]["errors"] for _, r in rows for m in r)
    lines += [
        "",
        f"Goals of the serving issue: batched throughput >= 3x unbatched at {args.clients} clients: "
        f"{'met' if goal_batch else '**not met**'}; cached follow-up >= 5x faster than the first question: "
        f"{goal_cache}; zero errors: {'met' if errors == 0 else f'**not met** ({errors})'}.",
    ]
    if args.device != "cpu":
        lines[0] = lines[0].replace("Measured", f"Measured with `--device {args.device}`", 1)
    table = "\n".join(lines)
    print(table, flush=True)
    if args.no_write:
        return
    write_section("serve", "Serving (CPU)", table)


if __name__ == "__main__":
    main()
