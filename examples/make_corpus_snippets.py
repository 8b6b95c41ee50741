"""Build a text-classification data set from three public corpora: which book is a snippet from?

Classes: ``timemachine`` (H. G. Wells, The Time Machine), ``shakespeare`` (karpathy's
tinyshakespeare) and ``wikipedia`` (WikiText-2). Nothing is downloaded or committed: the
script reads local copies of the corpora (``--data-dir``, laid out as
``timemachine/timemachine.txt``, ``tinyshakespeare/input.txt``, ``wikitext-2/{train,valid,test}.txt``)
and writes CSVs into ``--out``.

A snippet is ``--words`` consecutive words, lower-cased, letters and apostrophes only (so
WikiText's ``@-@`` markup, ``<unk>``, digits, punctuation and line structure cannot give the
answer away). Each corpus is cut *contiguously* into 80% train / 10% valid / 10% test of its
words before snippets are taken (no snippet shares text with another split), and every class
gets the same number of snippets per split, so the majority-class baseline is 1/3.

    python examples/make_corpus_snippets.py --data-dir DATA --out work/snippets
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re

SOURCES = {
    "timemachine": ["timemachine/timemachine.txt"],
    "shakespeare": ["tinyshakespeare/input.txt"],
    "wikipedia": ["wikitext-2/train.txt", "wikitext-2/valid.txt", "wikitext-2/test.txt"],
}
WORD = re.compile(r"[a-z']+")


def words_of(data_dir: str, files: list[str], limit: int) -> list[str]:
    words: list[str] = []
    for f in files:
        with open(os.path.join(data_dir, f), encoding="utf-8") as fh:
            for line in fh:
                words.extend(w for w in WORD.findall(line.lower().replace("<unk>", " ")) if w.strip("'"))
                if len(words) >= limit:
                    return words[:limit]
    return words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--words", type=int, default=10, help="words per snippet")
    ap.add_argument("--per-class", type=int, nargs=3, default=[1500, 300, 300], metavar=("TRAIN", "VALID", "TEST"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "valid": [], "test": []}
    # Every corpus contributes the same number of words (the smallest, The Time Machine, has ~32k).
    texts = {name: words_of(args.data_dir, files, 10**9) for name, files in SOURCES.items()}
    n_words = min(len(w) for w in texts.values())
    for name, words in texts.items():
        words = words[:n_words]
        cuts = {"train": (0, int(0.8 * n_words)), "valid": (int(0.8 * n_words), int(0.9 * n_words)),
                "test": (int(0.9 * n_words), n_words)}
        for (split, (a, b)), k in zip(cuts.items(), args.per_class):
            starts = list(range(a, b - args.words + 1))
            for s in rng.sample(starts, min(k, len(starts))):
                splits[split].append((" ".join(words[s : s + args.words]), name))
    for split, rows in splits.items():
        rng.shuffle(rows)
        with open(os.path.join(args.out, f"{split}.csv"), "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "source"])
            w.writerows(rows)
        print(f"{split}: {len(rows)} snippets -> {os.path.join(args.out, split + '.csv')}")
    # Unlabelled text for pre-training a language model: the training words of all three corpora.
    with open(os.path.join(args.out, "lm_train.txt"), "w", encoding="utf-8") as fh:
        for name, words in texts.items():
            words = words[: int(0.8 * n_words)]
            for s in range(0, len(words), 20):
                fh.write(" ".join(words[s : s + 20]) + "\n")
    print(f"lm_train.txt: {3 * int(0.8 * n_words)} words of unlabelled training text")


if __name__ == "__main__":
    main()
