"""MMLU-Pro questions: validation, "N/A" stripping, stratified sampling and the train/eval split.

Output artifacts: ``questions`` (accepted, sampled, with a ``split`` column) and
``questions_rejected`` (one human-readable reason per rejected source row).
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from spark_core import CATEGORIES
from spark_core.config import DataConfig
from spark_core.data.sources import RawRecord
from spark_core.str_enum import StrEnum

STAGE_VERSION = "2"  # bump when ingest logic changes what it writes
# 2: data.eval_total, a separate held-out evaluation pool
LETTERS = "ABCDEFGHIJ"
MIN_OPTIONS, MAX_OPTIONS = 2, 10
REQUIRED = ("question_id", "question", "options", "answer", "answer_index", "category")


class Split(StrEnum):
    """Which side of the split a question is on: the ``split`` column of ``questions``."""

    TRAIN = "train"  # synthesis and training use it
    EVAL = "eval"  # held out: only evaluation sees it


QUESTIONS_SCHEMA = pa.schema(
    [
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("options", pa.list_(pa.string()), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("answer_index", pa.int64(), nullable=False),
        pa.field("cot_content", pa.string()),
        pa.field("category", pa.string(), nullable=False),
        pa.field("src", pa.string()),
        pa.field("split", pa.string(), nullable=False),  # Split
    ]
)

REJECTED_SCHEMA = pa.schema(
    [
        pa.field("location", pa.string(), nullable=False),
        pa.field("question_id", pa.int64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("record", pa.string(), nullable=False),
    ]
)


@dataclass
class Validated:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _is_padding(option: str | None) -> bool:
    return option is None or option.strip().upper() == "N/A"


def _reject_reason(row: dict[str, Any]) -> str | None:
    """The first reason this row cannot be used, or None."""
    for name in REQUIRED:
        value = row.get(name)
        if value is None or (isinstance(value, (str, list)) and not value):
            return f"missing or empty field {name!r}"
        if isinstance(value, str) and not value.strip():
            return f"missing or empty field {name!r}"
    if row["category"] not in CATEGORIES:
        return f"unknown category {row['category']!r} (expected one of {', '.join(CATEGORIES)})"
    letter, index, options = row["answer"].strip(), row["answer_index"], row["options"]
    if letter not in LETTERS:
        return f"answer {letter!r} is not a letter A-J"
    if not 0 <= index < len(options):
        return f"answer_index {index} is outside the {len(options)} options"
    if LETTERS.index(letter) != index:
        return (
            f"answer letter {letter!r} disagrees with answer_index {index} "
            f"(index {index} is letter {LETTERS[index]!r}; letter {letter!r} is index "
            f"{LETTERS.index(letter)})"
        )
    if _is_padding(options[index]):
        return f"the answer option {letter!r} is 'N/A' padding"
    kept = sum(not _is_padding(o) for o in options)
    if not MIN_OPTIONS <= kept <= MAX_OPTIONS:
        return f"{kept} options after removing 'N/A' padding (need {MIN_OPTIONS} to {MAX_OPTIONS})"
    return None


def strip_padding(row: dict[str, Any]) -> dict[str, Any]:
    """Drop "N/A" options and re-point answer_index / answer at the same option."""
    options, index = row["options"], row["answer_index"]
    kept = [o for o in options if not _is_padding(o)]
    new_index = sum(not _is_padding(o) for o in options[:index])
    return {**row, "options": kept, "answer_index": new_index, "answer": LETTERS[new_index]}


def validate(records: list[RawRecord]) -> Validated:
    """Split raw records into accepted (normalised) and rejected (with a reason)."""
    out = Validated()
    first_seen: dict[int, str] = {}
    for rec in records:
        row = rec.data
        reason = _reject_reason(row)
        qid = row.get("question_id")
        if reason is None and qid in first_seen:
            reason = f"duplicate question_id {qid} (first seen at {first_seen[qid]})"
        if reason is not None:
            out.rejected.append(
                {
                    "location": rec.location,
                    "question_id": qid if isinstance(qid, int) else None,
                    "reason": reason,
                    "record": json.dumps(row, default=str, ensure_ascii=False),
                }
            )
            continue
        first_seen[qid] = rec.location
        clean = strip_padding(row)
        out.accepted.append(
            {
                "question_id": clean["question_id"],
                "question": clean["question"].strip(),
                "options": [o.strip() for o in clean["options"]],
                "answer": clean["answer"].strip(),
                "answer_index": clean["answer_index"],
                "cot_content": clean.get("cot_content") or "",
                "category": clean["category"],
                "src": clean.get("src") or "",
            }
        )
    return out


def _by_category(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["question_id"]):
        groups[row["category"]].append(row)
    return dict(sorted(groups.items()))


def proportional_allocation(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Largest-remainder allocation of ``total`` over categories, capped at their sizes."""
    available = sum(sizes.values())
    total = min(total, available)
    quotas = {c: total * n / available for c, n in sizes.items()}
    alloc = {c: min(int(q), sizes[c]) for c, q in quotas.items()}
    by_remainder = sorted(sizes, key=lambda c: (-(quotas[c] - int(quotas[c])), c))
    while sum(alloc.values()) < total:
        for c in by_remainder:
            if sum(alloc.values()) >= total:
                break
            if alloc[c] < sizes[c]:
                alloc[c] += 1
    return alloc


def sample(
    rows: list[dict[str, Any]], cfg: DataConfig, salt: str = "sample"
) -> list[dict[str, Any]]:
    """Seeded stratified sample: ``per_category`` each, or ``total`` allocated by size."""
    groups = _by_category(rows)
    if cfg.categories:
        groups = {c: g for c, g in groups.items() if c in cfg.categories}
    if cfg.per_category is not None:
        quota = {c: min(cfg.per_category, len(g)) for c, g in groups.items()}
    elif cfg.total is not None:
        quota = proportional_allocation({c: len(g) for c, g in groups.items()}, cfg.total)
    else:
        quota = {c: len(g) for c, g in groups.items()}
    picked = []
    for category, group in groups.items():
        rng = random.Random(f"{salt}:{cfg.seed}:{category}")
        picked.extend(rng.sample(group, quota[category]))
    return sorted(picked, key=lambda r: r["question_id"])


def split(rows: list[dict[str, Any]], cfg: DataConfig) -> list[dict[str, Any]]:
    """Disjoint train/eval split by question_id, stratified by category; every category with
    two or more questions gets at least one of each."""
    out = []
    for category, group in _by_category(rows).items():
        ids = [r["question_id"] for r in group]
        random.Random(f"split:{cfg.seed}:{category}").shuffle(ids)
        n_eval = round(len(ids) * cfg.eval_fraction)
        if cfg.eval_fraction > 0 and len(ids) >= 2:
            n_eval = min(max(n_eval, 1), len(ids) - 1)
        eval_ids = set(ids[:n_eval])
        out.extend(
            {**r, "split": Split.EVAL if r["question_id"] in eval_ids else Split.TRAIN}
            for r in group
        )
    return sorted(out, key=lambda r: r["question_id"])


def held_out(
    rows: list[dict[str, Any]], sampled: list[dict[str, Any]], cfg: DataConfig
) -> list[dict[str, Any]]:
    """``data.eval_total``: every sampled question is a training question, and a separate pool
    of ``eval_total`` questions, stratified by category size, is drawn from the rest."""
    assert cfg.eval_total is not None
    taken = {r["question_id"] for r in sampled}
    rest = [r for r in rows if r["question_id"] not in taken]
    pool = sample(
        rest,
        cfg.model_copy(update={"per_category": None, "total": cfg.eval_total}),
        salt="held_out",
    )
    out = [{**r, "split": Split.TRAIN} for r in sampled]
    out += [{**r, "split": Split.EVAL} for r in pool]
    return sorted(out, key=lambda r: r["question_id"])


@dataclass
class IngestResult:
    questions: pa.Table
    rejected: pa.Table
    stats: dict[str, Any]


def ingest_records(records: list[RawRecord], cfg: DataConfig) -> IngestResult:
    """Validate, sample and split: everything ingest does after reading the source."""
    checked = validate(records)
    sampled = sample(checked.accepted, cfg)
    if cfg.eval_total is not None:
        rows = held_out(checked.accepted, sampled, cfg)
    else:
        rows = split(sampled, cfg)
    questions = pa.Table.from_pylist(rows, schema=QUESTIONS_SCHEMA)
    rejected = pa.Table.from_pylist(checked.rejected, schema=REJECTED_SCHEMA)
    stats = {
        "read": len(records),
        "accepted": len(checked.accepted),
        "rejected": len(checked.rejected),
        "sampled": len(rows),
        **{s.value: sum(r["split"] == s for r in rows) for s in Split},
        "per_category": dict(sorted(Counter(r["category"] for r in rows).items())),
    }
    return IngestResult(questions, rejected, stats)
