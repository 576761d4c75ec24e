"""Answer extraction speed: MMLU-Pro's regexes (``reference_extract_answer``, quadratic in the
text length when a text has no "answer is (X)") against this project's linear-time rewrite
(``extract_answer``), on one model-like output per question of the shared MMLU-Pro test split
(12,032 questions). Every text must yield the same letter (or none) from both; the speed-up
must be at least 50x.

The texts are synthesised from each question (its statement, a discussion of every option,
then one of five endings: "the answer is (X)", "Answer: X", a letter in the last sentence, a
cut-off text whose last letter is an option label, or no standalone letter at all) — the
shapes of real chain-of-thought outputs, 1-4k characters long.

    python bench/score_outputs.py [--data ../shared/data/mmlu_pro_test.parquet] [--limit N]
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spark_core.data.answers import LETTERS, extract_answer, reference_extract_answer  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu_pro_test.parquet"


def _options(value) -> list[str]:
    return list(ast.literal_eval(value)) if isinstance(value, str) else list(value)


def synthesize(row: dict) -> str:
    """A chain-of-thought-like output for one question (deterministic in the question)."""
    qid, options, gold = int(row["question_id"]), _options(row["options"]), row["answer"]
    parts = [f"Let's think step by step. {row['question']}"]
    for i, option in enumerate(options):
        verdict = "fits the facts" if LETTERS[i] == gold else "does not match what we derived"
        if qid % 5 == 4:  # no standalone letter anywhere: the worst case for the old regex
            parts.append(f"The option '{option}' {verdict}; weigh it against the question.")
        else:
            parts.append(f"Option {LETTERS[i]}: {option}. This {verdict}.")
    ending = qid % 5
    if ending == 0:
        parts.append(f"Therefore, the answer is ({gold}).")
    elif ending == 1:
        parts.append(f"Putting it together.\nAnswer: {gold}")
    elif ending == 2:
        parts.append(f"So the best choice is {gold}, as shown above.")
    elif ending == 3:
        parts.append("Comparing the remaining options once more, the deciding factor is")
    return "\n".join(parts)


def _time(fn, texts: list[str]) -> tuple[float, list[str | None]]:
    start = time.perf_counter()
    letters = [fn(t) for t in texts]
    return time.perf_counter() - start, letters


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    args = parser.parse_args()
    import pyarrow.parquet as pq

    rows = pq.read_table(args.data).to_pylist()[: args.limit]
    texts = [synthesize(r) for r in rows]
    sizes = sorted(len(t) for t in texts)
    print(
        f"{len(texts)} synthesised outputs from {args.data}: "
        f"{sizes[len(sizes) // 2]} characters median, {sizes[-1]} max"
    )
    new_s, new = _time(extract_answer, texts)
    old_s, old = _time(reference_extract_answer, texts)
    differ = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    found = sum(letter is not None for letter in new)
    print(f"  MMLU-Pro regexes  {old_s:8.2f} s")
    print(f"  linear rewrite    {new_s:8.2f} s   {old_s / new_s:.0f}x faster")
    print(f"  identical letters on {len(texts) - len(differ)}/{len(texts)} texts ({found} found)")
    if differ:
        i = differ[0]
        print(f"  first difference, text {i}: old {old[i]!r}, new {new[i]!r}")
    if differ or old_s / new_s < 50:
        sys.exit(1)


if __name__ == "__main__":
    main()
