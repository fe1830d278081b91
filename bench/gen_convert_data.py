#!/usr/bin/env python3
"""Synthetic dataset files in the real distribution formats, sized like the real ones, for bench/convert.sh.

Usage: gen_convert_data.py OUTDIR. Deterministic (seeded). Writes:
  squad-train-v2.0.json   SQuAD v2.0 of the real train size (~42 MB, 130,319 questions)
  marco-v2.1.json         MS MARCO v2.1 columnar object (columns in a non-canonical order)
  marco-v1.1.jsonl        the same rows as MS MARCO v1.1 JSONL
  nq-original.jsonl       Natural Questions original format (document_tokens with HTML tokens)
"""
import json
import os
import random
import sys

rng = random.Random(1234)
WORDS = [w for w in (
    "the of and to in a is was for on as by with from that at his an were are which this be or its first new has "
    "also after had one their other city two her time university river world war during between most century "
    "zürich café naïve über 東京 straße école año").split()]


def words(n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def squad(path):
    data = []
    qn = 0
    for a in range(442):
        paras = []
        for p in range(43):
            if qn >= 130319:
                break
            ctx = words(rng.randint(90, 150)) + "."
            qas = []
            for q in range(7):
                if qn >= 130319:
                    break
                qn += 1
                start = rng.randint(0, len(ctx) - 20)
                text = ctx[start:start + rng.randint(3, 18)]
                impossible = rng.random() < 0.33
                qa = {"question": words(rng.randint(6, 12)) + "?", "id": "%024x" % rng.getrandbits(96),
                      "answers": [] if impossible else [{"text": text, "answer_start": start}] * rng.randint(1, 3),
                      "is_impossible": impossible}
                if impossible:
                    qa["plausible_answers"] = [{"text": text, "answer_start": start}]
                qas.append(qa)
            paras.append({"qas": qas, "context": ctx})
        data.append({"title": words(2), "paragraphs": paras})
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": "v2.0", "data": data}, f, ensure_ascii=False)


def marco_rows(n):
    for i in range(n):
        passages = [{"is_selected": int(j == 0), "passage_text": words(rng.randint(40, 90)) + ".",
                     "url": "http://example.com/%d/%d" % (i, j)} for j in range(10)]
        none = rng.random() < 0.3
        yield {"answers": ["No Answer Present."] if none else [words(rng.randint(3, 20))],
               "passages": passages, "query": words(rng.randint(3, 9)), "query_id": 1000000 + i,
               "query_type": rng.choice(["DESCRIPTION", "NUMERIC", "ENTITY", "LOCATION", "PERSON"]),
               "wellFormedAnswers": "[]" if none or rng.random() < 0.8 else [words(8)]}


def marco(path_v21, path_v11, n=25000):
    rows = list(marco_rows(n))
    cols = ["wellFormedAnswers", "passages", "query_type", "query_id", "answers", "query"]
    with open(path_v21, "w", encoding="utf-8") as f:
        json.dump({c: {str(i): r[c] for i, r in enumerate(rows)} for c in cols}, f, ensure_ascii=False)
    with open(path_v11, "w", encoding="utf-8") as f:
        for r in rows:
            r = dict(r)
            del r["wellFormedAnswers"]
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def nq(path, n=120):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            tokens = []
            html = []
            for p in range(rng.randint(80, 120)):
                tokens.append({"token": "<P>", "start_byte": 0, "end_byte": 0, "html_token": True})
                for _ in range(rng.randint(60, 120)):
                    tokens.append({"token": rng.choice(WORDS), "start_byte": 0, "end_byte": 0, "html_token": False})
                tokens.append({"token": "</P>", "start_byte": 0, "end_byte": 0, "html_token": True})
            html = "<html><body>" + " ".join(t["token"] for t in tokens) + "</body></html>"
            ls = rng.randint(0, len(tokens) // 2)
            while not tokens[ls]["html_token"] or tokens[ls]["token"] != "<P>":
                ls += 1
            le = ls + 1
            while tokens[le]["token"] != "</P>":
                le += 1
            le += 1
            kind = rng.random()
            ann = {"annotation_id": rng.getrandbits(63), "yes_no_answer": "NONE",
                   "long_answer": {"start_token": -1, "end_token": -1, "start_byte": -1, "end_byte": -1,
                                   "candidate_index": -1},
                   "short_answers": []}
            if kind > 0.3:
                ann["long_answer"] = {"start_token": ls, "end_token": le, "start_byte": 0, "end_byte": 0,
                                      "candidate_index": 0}
                if kind > 0.6:
                    ann["short_answers"] = [{"start_token": ls + 2, "end_token": ls + 5, "start_byte": 0,
                                             "end_byte": 0}]
            ex = {"annotations": [ann], "document_html": html, "document_title": words(3),
                  "document_tokens": tokens, "document_url": "https://en.wikipedia.org/wiki/%d" % i,
                  "example_id": 5000000000000000000 + i * 7919, "long_answer_candidates": [
                      {"start_token": ls, "end_token": le, "start_byte": 0, "end_byte": 0, "top_level": True}],
                  "question_text": words(8), "question_tokens": words(8).split()}
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    squad(os.path.join(out, "squad-train-v2.0.json"))
    marco(os.path.join(out, "marco-v2.1.json"), os.path.join(out, "marco-v1.1.jsonl"))
    nq(os.path.join(out, "nq-original.jsonl"))


if __name__ == "__main__":
    main()
