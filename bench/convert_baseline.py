#!/usr/bin/env python3
"""Plain-Python converters (json module only) with the same mapping as `deepsynth convert`.

The side-by-side baseline for bench/convert.sh. Usage: convert_baseline.py squad|marco|nq INPUT OUTPUT
"""
import gzip
import json
import sys


def open_input(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rt", encoding="utf-8") if magic == b"\x1f\x8b" else open(path, encoding="utf-8")


def record(rid, source, text, instruction, golds):
    answers = []
    for g in golds:
        if g and g not in answers:
            answers.append(g)
    return {"id": rid, "source": source, "text": text, "instruction": instruction,
            "answer": answers[0] if answers else "", "answers": answers}


def write(out, rec):
    out.write(json.dumps(rec, ensure_ascii=False))
    out.write("\n")


def squad(inp, out):
    with open_input(inp) as f:
        data = json.load(f)["data"]
    for article in data:
        for para in article["paragraphs"]:
            ctx = para["context"]
            for qa in para["qas"]:
                golds = [] if qa.get("is_impossible") else [a["text"] for a in qa.get("answers", [])]
                write(out, record(qa["id"], "squad", ctx, qa["question"], golds))


def marco_golds(answers, well_formed):
    golds = [a for a in answers if a != "No Answer Present."]
    if isinstance(well_formed, list):
        golds += well_formed
    return golds


def marco(inp, out):
    with open_input(inp) as f:
        first = f.readline()
        try:
            rec = json.loads(first)
            v11 = "passages" in rec and isinstance(rec["passages"], list)
        except ValueError:
            v11 = False
    if v11:
        with open_input(inp) as f:
            for line in f:
                r = json.loads(line)
                text = "\n\n".join(p["passage_text"] for p in r["passages"])
                golds = marco_golds(r.get("answers", []), r.get("wellFormedAnswers", []))
                write(out, record(str(r["query_id"]), "marco", text, r["query"], golds))
        return
    with open_input(inp) as f:
        cols = json.load(f)
    wfa = cols.get("wellFormedAnswers", {})
    for key, passages in cols["passages"].items():
        text = "\n\n".join(p["passage_text"] for p in passages)
        golds = marco_golds(cols.get("answers", {}).get(key, []), wfa.get(key, []))
        write(out, record(str(cols["query_id"][key]), "marco", text, cols["query"][key], golds))


def is_html(tok):
    inner = tok[1:-1].lstrip("/") if len(tok) >= 2 and tok[0] == "<" and tok[-1] == ">" else ""
    return inner[:1].isascii() and inner[:1].isalpha()


def truncate(text, max_chars):
    """At most max_chars characters, cut at the last whitespace before the limit when there is one."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    space = max((i for i, c in enumerate(head) if c.isspace()), default=-1)
    end = space if not text[max_chars].isspace() and space > 0 else max_chars
    return text[:end].rstrip()


def nq(inp, out, max_chars=20000):
    with open_input(inp) as f:
        for line in f:
            ex = json.loads(line)
            if "document_tokens" in ex:
                toks = [(t["token"], t["html_token"]) for t in ex["document_tokens"]]
            else:
                toks = [(t, is_html(t)) for t in ex["document_text"].split(" ")]

            def span(s, e):
                return " ".join(t for t, html in toks[s:e] if t and not html)

            shorts, yes_no, longs, para = [], [], [], None
            for ann in ex["annotations"]:
                sa = ann.get("short_answers", [])
                if sa:
                    shorts.append(", ".join(span(s["start_token"], s["end_token"]) for s in sa))
                if ann.get("yes_no_answer", "NONE") in ("YES", "NO"):
                    yes_no.append(ann["yes_no_answer"].lower())
                la = ann["long_answer"]
                if la["start_token"] >= 0:
                    text = span(la["start_token"], la["end_token"])
                    longs.append(text)
                    if para is None:
                        para = text
            golds = shorts or yes_no or longs
            if para is None:
                para = truncate(span(0, len(toks)), max_chars)
            write(out, record(str(ex["example_id"]), "nq", para, ex["question_text"], golds))


def main():
    kind, inp, outp = sys.argv[1:4]
    with open(outp, "w", encoding="utf-8") as out:
        {"squad": squad, "marco": marco, "nq": nq}[kind](inp, out)


if __name__ == "__main__":
    main()
