"""Score model outputs in MMLU-Pro's results format with this project's extraction.

Each record has ``question_id``, ``answer`` (gold letter), ``category`` and the model text in
``model_outputs`` or ``generated_text``. As in MMLU-Pro's own scoring, a record whose text
yields no letter counts as a random guess (seeded, among its ``options`` when present, else
among A-J)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

from spark_core.data.answers import LETTERS, extract_answer


def _records(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if not text.strip():
        raise ValueError(f"{path}: file is empty")
    if path.endswith(".jsonl"):
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict):  # MMLU-Pro also writes {category: [records]}
        data = [r for value in data.values() for r in (value if isinstance(value, list) else [])]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of records")
    return data


def score_file(path: str, seed: int = 12345) -> tuple[dict[str, dict], dict]:
    rng = random.Random(seed)
    stats: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "correct": 0, "no_answer": 0})
    for i, record in enumerate(_records(path)):
        text = record.get("model_outputs", record.get("generated_text"))
        missing = [k for k in ("answer", "category") if k not in record]
        if text is None or missing:
            raise ValueError(
                f"{path}: record {i} lacks {missing or ['model_outputs or generated_text']}"
            )
        pred = extract_answer(text)
        cell = stats[record["category"]]
        cell["n"] += 1
        if pred is None:
            cell["no_answer"] += 1
            pred = LETTERS[rng.randrange(len(record.get("options") or LETTERS))]
        cell["correct"] += pred == record["answer"]
    per_category = {c: {**v, "accuracy": v["correct"] / v["n"]} for c, v in stats.items()}
    total = {k: sum(v[k] for v in stats.values()) for k in ("n", "correct", "no_answer")}
    overall = {**total, "accuracy": total["correct"] / total["n"] if total["n"] else 0.0}
    return per_category, overall
