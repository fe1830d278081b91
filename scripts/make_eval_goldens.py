#!/usr/bin/env python3
"""Golden fixtures for `deepsynth eval` (tests/eval.rs), computed by the reference implementations themselves.

- SQuAD v2 exact match / F1: the official `evaluate-v2.0.py` (SQuAD explorer site, "Evaluation Script v2.0"; not
  on PyPI, so pass its path with --squad-script). Its per-question scores come from its own `get_raw_scores`, the
  corpus figures from running it as a program on the cases written in SQuAD's JSON format.
- ROUGE-L: `rouge-score` (`RougeScorer(["rougeL"], use_stemmer=...)`, `score_multi`).
- BLEU: `sacrebleu` defaults (`corpus_bleu`, `sentence_bleu`).
- CER: `jiwer.cer`, each example against its gold with the lowest CER; examples without a gold have none.
- Porter stems: `nltk.stem.porter.PorterStemmer()` (NLTK_EXTENSIONS) on real words (the words of NLTK's own
  doctests) and on made-up words built to reach every rule.

    /work/venv/bin/pip install rouge-score sacrebleu nltk jiwer
    /work/venv/bin/python scripts/make_eval_goldens.py --squad-script /path/to/evaluate-v2.0.py

Writes tests/fixtures/eval/{references.jsonl, predictions.jsonl, expected.json, porter.json}.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jiwer
import nltk
import sacrebleu
from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer, tokenizers

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "eval"


def long_text(seed, words):
    rng = random.Random(seed)
    vocab = ("the a an of invoice total due paid customer account balance report revenue 2024 1,250.00 EUR "
             "quarter growth margin net gross operating cash flow statement, notes (see below) - / & % $ 3.5 "
             "Zoë Ramírez naïve café résumé Straße").split()
    return " ".join(rng.choice(vocab) for _ in range(words))


def ocr_noise(text, seed, rate):
    """Drops, swaps or inserts characters at `rate`, like an OCR model's slips."""
    rng = random.Random(seed)
    out = []
    for ch in text:
        r = rng.random()
        if r < rate / 3:
            continue
        if r < 2 * rate / 3:
            out.append(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 .,"))
            continue
        out.append(ch)
        if r < rate:
            out.append(rng.choice("il1|.,"))
    return "".join(out)


# (id, source, prediction, golds): the tricky cases.
def cases():
    page = long_text(7, 260)
    return [
        ("plain", "squad", "Denver Broncos", ["Denver Broncos", "The Denver Broncos"]),
        ("articles-dropped", "squad", "the Eiffel Tower", ["Eiffel Tower"]),
        ("articles-everywhere", "squad", "an apple a day keeps the doctor away", ["apple day keeps doctor away"]),
        ("article-inside-word", "squad", "theatre anthem", ["the atre an them"]),
        ("case-only", "squad", "PARIS", ["Paris"]),
        ("partial-overlap", "squad", "the cat sat on the mat", ["a cat", "cat sat down on mat"]),
        ("repeated-tokens", "squad", "cat cat cat dog", ["cat dog dog"]),
        ("several-golds-best-f1", "nq", "in the year 1066 at Hastings", ["1066", "Battle of Hastings", "1066 AD"]),
        ("empty-pred-answerable", "squad", "", ["1,250 EUR"]),
        ("empty-pred-unanswerable", "squad", "", []),
        ("wrong-pred-unanswerable", "squad", "Napoleon", []),
        ("article-pred-unanswerable", "squad", "The", []),
        ("punct-only-pred", "nq", "?!...", ["yes"]),
        ("punct-only-pred-unanswerable", "nq", "...", []),
        ("punct-only-gold", "nq", "", ["...", "--"]),
        ("article-only-gold-and-real", "nq", "a dog", ["The", "dog"]),
        ("numbers-commas", "marco", "1,250", ["1250"]),
        ("numbers-decimal", "marco", "3.14 percent", ["3 14 percent", "about 3.14%"]),
        ("numbers-range", "marco", "1990-2000", ["1990 - 2000", "from 1990 to 2000"]),
        ("leading-decimal", "marco", "about .5 of it, roughly", ["0.5"]),
        ("unicode-accents", "squad", "Zoë Ramírez", ["zoë ramírez", "Zoe Ramirez"]),
        ("unicode-cjk", "squad", "東京タワー", ["東京タワー"]),
        ("unicode-final-sigma", "squad", "ΣΟΦΙΑ ΟΔΟΣ", ["σοφια οδος"]),
        ("unicode-dotted-i", "squad", "İstanbul", ["istanbul"]),
        ("unicode-kelvin", "squad", "300 \u212a", ["300 k"]),
        ("circled-letter-article", "squad", "\u24b6an the", ["\u24b6"]),
        ("combining-mark-article", "squad", "a\u0301 bc", ["bc"]),
        ("digit-scripts-article", "squad", "\u0663a a\u00b2 the", ["\u0663a a\u00b2"]),
        ("curly-quotes", "squad", "\u201cThe Raven\u201d", ["The Raven"]),
        ("em-dash", "squad", "state\u2014of\u2014the\u2014art", ["state-of-the-art"]),
        ("hyphen-apostrophe", "squad", "don't stop state-of-the-art", ["dont stop stateoftheart"]),
        ("underscore", "squad", "snake_case the_end", ["snakecase theend"]),
        ("odd-whitespace", "squad", "New\u00a0York\u3000City\u2003\x1fUSA\t", ["New York City USA"]),
        ("zero-width", "squad", "New\u200bYork", ["New York"]),
        ("html-entities", "marco", "AT&amp;T &quot;wireless&quot; &lt;5G&gt;", ["AT&T \"wireless\" <5G>"]),
        ("skipped-and-newlines", "marco", "line one-\nline two <skipped> done\n", ["line oneline two done"]),
        ("tokenized-period", "marco", "It ends here .", ["It ends here."]),
        ("stemming", "marco", "running runners ran quickly", ["the runner runs quick"]),
        ("long-answer", "marco", long_text(1, 400), [long_text(2, 300), long_text(3, 40)]),
        ("ocr-page", "ocr", ocr_noise(page, 4, 0.08), [page]),
        ("ocr-clean", "ocr", "  Invoice 2291\nTotal: 1,250 EUR ", ["Invoice 2291\nTotal: 1,250 EUR"]),
        ("ocr-empty", "ocr", "", ["Invoice 2291"]),
        ("ocr-extra-whitespace", "ocr", "Invoice  2291", ["Invoice 2291", "Invoice 2291."]),
    ]


def load_official(path):
    spec = importlib.util.spec_from_file_location("squad_v2_official", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def squad_dataset(items):
    qas = [{"id": i, "question": "q", "answers": [{"text": g, "answer_start": 0} for g in golds],
            "is_impossible": not golds} for i, _, _, golds in items]
    return [{"title": "fixtures", "paragraphs": [{"context": "c", "qas": qas}]}]


def run_official(script, items):
    with tempfile.TemporaryDirectory() as tmp:
        data, preds, out = Path(tmp, "data.json"), Path(tmp, "preds.json"), Path(tmp, "out.json")
        data.write_text(json.dumps({"version": "v2.0", "data": squad_dataset(items)}))
        preds.write_text(json.dumps({i: p for i, _, p, _ in items}))
        subprocess.run([sys.executable, script, str(data), str(preds), "-o", str(out)], check=True)
        return json.loads(out.read_text())


def best_cer(pred, golds):
    rates = [jiwer.cer(g, pred) for g in golds]
    best = min(range(len(rates)), key=lambda k: (rates[k], k))
    return rates[best], golds[best]


def corpus(items, official_eval, stem_scorer, plain_scorer):
    """The corpus figures of a group: official EM/F1 (from the script's own dict), the others as deepsynth defines."""
    hyps = [p for _, _, p, _ in items]
    refs = [g or [""] for _, _, _, g in items]
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(max(map(len, refs)))]
    with_gold = [(p, best_cer(p, g)[1]) for _, _, p, g in items if g]
    mean = lambda xs: 100.0 * sum(xs) / len(xs)
    return {
        "total": len(items),
        "exact": official_eval["exact"],
        "f1": official_eval["f1"],
        "rougeL": mean([plain_scorer.score_multi(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]),
        "rougeL_stemmed": mean([stem_scorer.score_multi(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]),
        "bleu": sacrebleu.corpus_bleu(hyps, streams).score,
        "cer": 100.0 * jiwer.cer([g for _, g in with_gold], [p for p, _ in with_gold]) if with_gold else None,
    }


def porter_words():
    text = " ".join(p.read_text(errors="ignore") for p in sorted(Path(nltk.__file__).parent.glob("test/*.doctest")))
    real = sorted(set(w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3))
    rng = random.Random(0)
    real = sorted(rng.sample(real, min(3000, len(real))))
    bases = ["gener", "relat", "condit", "rat", "hop", "fil", "agr", "feed", "bl", "siz", "fail", "tann", "fizz",
             "happ", "sk", "crit", "formal", "sensit", "electr", "hope", "good", "adjust", "depend", "adopt",
             "effect", "analog", "trouble", "control", "roll", "toy", "synerg", "ly", "yy", "by", "boy", "sy",
             "triplic", "format", "revival", "allow", "infer", "airlin", "defens", "homolog", "bowdler", "conf",
             "plaster", "motor", "cease", "agree", "disable", "proceed", "succe", "exce", "din", "ti", "li"]
    suffixes = ["", "s", "es", "ies", "sses", "ss", "ied", "ed", "eed", "ing", "ating", "bling", "izing", "y", "ational",
                "tional", "enci", "anci", "izer", "bli", "alli", "entli", "eli", "ousli", "ization", "ation", "ator",
                "alism", "iveness", "fulness", "ousness", "aliti", "iviti", "biliti", "fulli", "logi", "icate", "ative",
                "alize", "iciti", "ical", "ful", "ness", "al", "ance", "ence", "er", "ic", "able", "ible", "ant",
                "ement", "ment", "ent", "sion", "tion", "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize", "e",
                "le", "ll", "lli", "alling", "eries"]
    made = sorted(set(b + s for b in bases for s in suffixes))
    special = ["sky", "skies", "dying", "lying", "tying", "news", "innings", "inning", "outings", "outing",
               "cannings", "canning", "howe", "proceed", "exceed", "succeed", "ies", "pies", "dies", "ied", "tied",
               "yyyy", "syzygy", "abc", "ab", "a", "1234", "2000s", "year1990s", "mp3s", "x1y2"]
    return special + real + made


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad-script", required=True, help="the official evaluate-v2.0.py")
    args = parser.parse_args()
    official = load_official(args.squad_script)
    items = cases()
    OUT.mkdir(parents=True, exist_ok=True)

    with open(OUT / "references.jsonl", "w", encoding="utf-8") as f:
        for i, source, _, golds in items:
            record = {"id": i, "source": source, "text": f"Document for {i}.", "instruction": "Answer.",
                      "answer": golds[0] if golds else "", "answers": golds}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(OUT / "predictions.jsonl", "w", encoding="utf-8") as f:
        for i, _, pred, _ in items:
            f.write(json.dumps({"id": i, "prediction": pred}, ensure_ascii=False) + "\n")

    exact_raw, f1_raw = official.get_raw_scores(squad_dataset(items), {i: p for i, _, p, _ in items})
    plain = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    stemmed = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    plain_tok, stem_tok = tokenizers.DefaultTokenizer(False), tokenizers.DefaultTokenizer(True)
    bleu_tok = sacrebleu.BLEU().tokenizer
    examples = []
    for i, source, pred, golds in items:
        refs = golds or [""]
        examples.append({
            "id": i,
            "normalized": official.normalize_answer(pred),
            "tok_13a": bleu_tok(pred.rstrip()),
            "tok_rouge": plain_tok.tokenize(pred),
            "tok_rouge_stemmed": stem_tok.tokenize(pred),
            "exact": exact_raw[i],
            "f1": f1_raw[i],
            "rougeL": plain.score_multi(refs, pred)["rougeL"].fmeasure,
            "rougeL_stemmed": stemmed.score_multi(refs, pred)["rougeL"].fmeasure,
            "bleu": sacrebleu.sentence_bleu(pred, refs).score,
            "cer": best_cer(pred, golds)[0] if golds else None,
        })

    full = run_official(args.squad_script, items)
    groups = {"overall": (items, full)}
    for name, keep in [("HasAns", lambda g: bool(g)), ("NoAns", lambda g: not g)]:
        subset = [it for it in items if keep(it[3])]
        groups[name] = (subset, {"exact": full[f"{name}_exact"], "f1": full[f"{name}_f1"]})
        assert full[f"{name}_total"] == len(subset)
    for source in sorted(set(s for _, s, _, _ in items)):
        subset = [it for it in items if it[1] == source]
        groups[f"source:{source}"] = (subset, official.make_eval_dict(exact_raw, f1_raw, [it[0] for it in subset]))
    expected = {
        "versions": {name: importlib.metadata.version(name) for name in ["sacrebleu", "rouge-score", "nltk", "jiwer"]},
        "official_output": full,
        "groups": {name: corpus(subset, ev, stemmed, plain) for name, (subset, ev) in groups.items()},
        "examples": examples,
    }
    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    stemmer = PorterStemmer()
    words = porter_words()
    porter = {"mode": stemmer.mode, "pairs": [[w, stemmer.stem(w)] for w in words]}
    (OUT / "porter.json").write_text(json.dumps(porter, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{len(items)} cases, {len(words)} stemmer words -> {OUT}")


if __name__ == "__main__":
    main()
