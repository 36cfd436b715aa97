"""Re-extract and re-grade every candidate of generation logs with the current ``adaptive_ttc.answers``.

A log records, per candidate, the answer extracted and its grade when it was collected. This script extracts
again with the code as it is now and reports what a change to answer extraction would change: answers,
grades (right -> wrong is a regression, wrong -> right a fix) and majority votes over the first N pooled samples
(N = 2, 4, 8, 16, voting as ``best_of_n.select`` does: most votes, the answer seen first wins a tie).

    python scripts/recheck_answers.py benchmarks/logs/*.jsonl.gz            # counts and 20 changed answers
    python scripts/recheck_answers.py --sample 0 --strict LOG.jsonl.gz      # exit 1 on any regression
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from adaptive_ttc.answers import answers_equal, extract_answer, normalize_answer

VOTE_SIZES = (2, 4, 8, 16)


def records(path: Path) -> Iterator[dict[str, Any]]:
    """The question records of a log (the header line skipped)."""
    with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as lines:
        for line in lines:
            record = json.loads(line)
            if "question" in record:
                yield record


def vote(answers: Sequence[str | None]) -> str | None:
    """The majority answer's vote key (first seen wins a tie), ``None`` when no answer was extracted."""
    keys = [normalize_answer(a) for a in answers if a is not None]
    if not keys:
        return None
    counts = Counter(keys)
    return max(counts, key=lambda key: (counts[key], -keys.index(key)))


def recheck(paths: Sequence[Path]) -> tuple[Counter[str], list[dict[str, Any]]]:
    """Counts of what changed, and every changed answer."""
    counts: Counter[str] = Counter()
    changed: list[dict[str, Any]] = []
    for path in paths:
        for record in records(path):
            reference = record["reference"]
            for part in ("greedy", "pool"):
                for candidate in (record.get(part) or {}).get("candidates", []):
                    counts["candidates"] += 1
                    new = extract_answer(candidate["text"])
                    right = answers_equal(new, reference)
                    if new == candidate["answer"]:
                        continue
                    counts["answers changed"] += 1
                    counts["vote keys changed"] += normalize_answer(new) != normalize_answer(candidate["answer"])
                    counts["right -> wrong"] += candidate["correct"] and not right
                    counts["wrong -> right"] += right and not candidate["correct"]
                    changed.append({"log": path.name, "reference": reference, "old": candidate["answer"], "new": new,
                                    "was_right": candidate["correct"], "is_right": right})  # fmt: skip
            pool = (record.get("pool") or {}).get("candidates", [])
            for n in VOTE_SIZES:
                if len(pool) < n:
                    continue
                old_vote = vote([c["answer"] for c in pool[:n]])
                new_vote = vote([extract_answer(c["text"]) for c in pool[:n]])
                counts[f"votes of {n}"] += 1
                if old_vote != new_vote:
                    counts[f"votes of {n} changed"] += 1
                    was = old_vote is not None and answers_equal(old_vote, reference)
                    now = new_vote is not None and answers_equal(new_vote, reference)
                    counts[f"votes of {n} right -> wrong"] += was and not now
                    counts[f"votes of {n} wrong -> right"] += now and not was
    return counts, changed


def main(argv: Sequence[str] | None = None) -> None:
    """Print the counts and a sample of changed answers; ``--strict`` exits 1 on any regression."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--sample", type=int, default=20, help="changed answers to print (random, seeded)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a right answer or vote turns wrong")
    args = parser.parse_args(argv)
    counts, changed = recheck(args.logs)
    for key, value in sorted(counts.items()):
        print(f"{key}: {value}")
    for row in random.Random(0).sample(changed, min(args.sample, len(changed))):
        print(json.dumps(row, ensure_ascii=False))
    regressions = sum(v for k, v in counts.items() if k.endswith("right -> wrong"))
    if args.strict and regressions:
        sys.exit(f"{regressions} right answers or votes turned wrong")


if __name__ == "__main__":
    main()
