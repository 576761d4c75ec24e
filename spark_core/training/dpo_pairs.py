"""Step-level preference pairs from the ``candidate_pool`` (MCTS-DPO / StepAgent style): every
synthesized step holds several judged candidates for the same state, so the selected one and a
worse one make a DPO pair without a single extra model call. ``chosen`` and ``rejected`` are
DPO's names for the two sides of a pair; the candidate synthesis selected at a step is the
pool's ``selected`` row, which may or may not become a pair's chosen side.

Per step (same question, same step: the same state and prompt):

- **score pair**: chosen = the selected candidate, when it is viable (judge score strictly above
  ``rollout.viable_threshold``; a fallback selection, made when nothing was viable, is nothing
  to prefer); rejected = the step's lowest-scored candidate (ties: the action name), kept only
  when chosen − rejected ≥ ``training.dpo.score_margin``.
- **rarity pair** (``training.dpo.rarity_margin`` set): chosen = the selected viable candidate;
  rejected = a *viable* candidate whose action synthesis selected more often over the whole
  pool (the most often selected one; ties: the higher score, then the name) and that scores at
  most ``rarity_margin`` above the chosen one. It teaches rarity-first's preference for the
  less used tool when the judge finds both about equally good. Skipped when it would repeat the
  step's score pair.

A candidate whose judgement failed (score None) has no score to compare: it is never chosen,
never rejected, and not viable. (Today's pool leaves such candidates out altogether.)

Prompts and completions are fitted to ``training.max_seq_len`` by the truncation rule that SFT
and PPO use (``training.data.fit``): the three trainers see identical states.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from spark_core.synthesis.selection import is_viable
from spark_core.training.data import Truncation, chat_ids, drop_oldest_steps, messages, step_count


def preference_pairs(
    pool: list[dict[str, Any]],
    threshold: float,
    score_margin: float,
    rarity_margin: float | None = None,
) -> list[dict[str, Any]]:
    """DPO pairs of the candidate pool, ordered by (question, step, score pair first)."""
    selected_count = Counter(r["action"] for r in pool if r["selected"])
    steps: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in pool:
        if row["judge_score"] is not None:
            steps[(row["question_id"], row["step"])].append(row)
    pairs = []
    for key in sorted(steps):
        group = steps[key]
        selected = [r for r in group if r["selected"]]
        if len(selected) != 1 or not is_viable(selected[0]["judge_score"], threshold):
            continue
        chosen = selected[0]  # the selected candidate is the pair's preferred side
        others = [r for r in group if r is not chosen]
        if not others:
            continue
        lowest = min(others, key=lambda r: (r["judge_score"], r["action"]))
        score_pair = chosen["judge_score"] - lowest["judge_score"] >= score_margin
        if score_pair:
            pairs.append(_pair(chosen, lowest, "score"))
        if rarity_margin is None:
            continue
        common = [
            r
            for r in others
            if is_viable(r["judge_score"], threshold)
            and selected_count[r["action"]] > selected_count[chosen["action"]]
            and r["judge_score"] - chosen["judge_score"] <= rarity_margin
        ]
        if not common:
            continue
        rejected = min(
            common, key=lambda r: (-selected_count[r["action"]], -r["judge_score"], r["action"])
        )
        if not (score_pair and rejected is lowest):
            pairs.append(_pair(chosen, rejected, "rarity"))
    return pairs


def _pair(chosen: dict[str, Any], rejected: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "question_id": chosen["question_id"],
        "step": chosen["step"],
        "kind": kind,
        "system": chosen["system"],
        "prompt": chosen["prompt"],
        "chosen": chosen["completion"],
        "rejected": rejected["completion"],
        "chosen_action": chosen["action"],
        "rejected_action": rejected["action"],
        "chosen_score": chosen["judge_score"],
        "rejected_score": rejected["judge_score"],
    }


def fit_pair(
    tokenizer: Any, system: str, prompt: str, chosen: str, rejected: str, max_len: int
) -> tuple[str, int] | None:
    """The state fitted so that it plus either completion fits ``max_len`` (``training.data.fit``'s
    rule: drop the oldest steps first), with the number of steps dropped; None if even the bare
    state does not fit."""
    for n in range(step_count(prompt) + 1):
        text = drop_oldest_steps(prompt, n)
        if all(
            sum(map(len, chat_ids(tokenizer, system, text, completion))) <= max_len
            for completion in (chosen, rejected)
        ):
            return text, n
    return None


def dpo_records(
    pairs: list[dict[str, Any]], tokenizer: Any, max_len: int
) -> tuple[list[dict[str, Any]], Truncation]:
    """Conversational prompt / chosen / rejected records for TRL's DPOTrainer, fitted like
    SFT's and PPO's rows (TRL then has nothing left to cut)."""
    report = Truncation(rows=len(pairs))
    records = []
    for pair in pairs:
        fitted = fit_pair(
            tokenizer, pair["system"], pair["prompt"], pair["chosen"], pair["rejected"], max_len
        )
        if fitted is None:
            report.dropped_rows += 1
            continue
        prompt, dropped = fitted
        report.truncated_rows += dropped > 0
        records.append(
            {
                "prompt": messages(pair["system"], prompt),
                "chosen": [{"role": "assistant", "content": pair["chosen"]}],
                "rejected": [{"role": "assistant", "content": pair["rejected"]}],
            }
        )
    if pairs and not records:
        raise ValueError(
            f"none of {len(pairs)} DPO pairs fits training.max_seq_len={max_len} even without "
            "earlier steps: raise max_seq_len"
        )
    return records, report
