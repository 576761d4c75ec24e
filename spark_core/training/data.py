"""Training data from ``trajectories`` (or the ``candidate_pool``): chat-formatted prompt /
completion pairs, tokenised so that only the completion (the step's action text) is trained.

One truncation rule serves SFT and PPO (``fit``): the system prompt, the question and the whole
completion always stay; a row that is too long loses its oldest trajectory steps from the
middle of the state, replaced by a marker."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)


STEP_START = re.compile(r"\n(?=Thought:)")
STEPS_HEADER = "\n\nSteps so far:\n"
STEPS_FOOTER = "\n\nWrite the next step."


def messages(system: str, prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def chat_ids(tokenizer: Any, system: str, prompt: str, completion: str) -> tuple[list, list]:
    """Token ids of the chat prompt (with the assistant's generation header) and of the
    completion with its turn's end token: the one tokenisation that synthesis (behaviour
    log-probs), PPO and SFT share."""
    chat = messages(system, prompt)
    prompt_text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        [*chat, {"role": "assistant", "content": completion}], tokenize=False
    )
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template does not extend the prompt with the completion")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
    completion_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False).input_ids
    return prompt_ids, completion_ids


def _split_state(prompt: str) -> tuple[str, list[str], str] | None:
    """(question part, trajectory steps, footer) of a state rendered by ``state_message``."""
    if STEPS_HEADER not in prompt or STEPS_FOOTER not in prompt:
        return None
    head, rest = prompt.split(STEPS_HEADER, 1)
    body, footer = rest.rsplit(STEPS_FOOTER, 1)
    steps = STEP_START.split(body) if body.startswith("Thought:") else []
    return head, steps, footer


def step_count(prompt: str) -> int:
    parts = _split_state(prompt)
    return len(parts[1]) if parts else 0


def drop_oldest_steps(prompt: str, n: int) -> str:
    """The state with its ``n`` oldest trajectory steps replaced by a marker; the question
    (before "Steps so far:") and the newest steps stay."""
    parts = _split_state(prompt)
    if n <= 0 or not parts or not parts[1]:
        return prompt
    head, steps, footer = parts
    n = min(n, len(steps))
    body = "\n".join([f"({n} earlier steps omitted)", *steps[n:]])
    return f"{head}{STEPS_HEADER}{body}{STEPS_FOOTER}{footer}"


@dataclass
class Fitted:
    """A row fitted to the token budget: its prompt, how many steps were dropped, and whether
    it fits at all (the system prompt, question and whole completion alone may not)."""

    prompt: str
    dropped_steps: int
    fits: bool
    prompt_ids: list[int]
    completion_ids: list[int]


def fit(tokenizer: Any, system: str, prompt: str, completion: str, max_len: int) -> Fitted:
    """The one truncation rule for SFT and PPO: keep the system prompt, the question and the
    whole completion; while too long, drop the oldest trajectory steps from the middle."""
    steps = step_count(prompt)
    # n = 0 first: a row that fits is kept verbatim; then one more oldest step at a time, so
    # the row keeps as much recent context as the budget allows (re-tokenising each time: the
    # marker and the chat template make the count from subtraction inexact)
    for n in range(steps + 1):
        text = drop_oldest_steps(prompt, n)
        # the completion (the trained tokens) is never cut: a cut action would teach the
        # model to stop mid-step, and its behaviour log-probs would no longer line up
        prompt_ids, completion_ids = chat_ids(tokenizer, system, text, completion)
        if len(prompt_ids) + len(completion_ids) <= max_len:
            return Fitted(text, n, True, prompt_ids, completion_ids)
    # even with every step gone it is too long: the caller drops the row and counts it
    return Fitted(text, steps, False, prompt_ids, completion_ids)


def encode(
    tokenizer: Any, system: str, prompt: str, completion: str, max_len: int
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + completion (with the turn's end token) and a completion mask,
    fitted by ``fit``; a row that cannot fit raises."""
    fitted = fit(tokenizer, system, prompt, completion, max_len)
    if not fitted.fits:
        raise ValueError(f"system prompt + question + completion need more than {max_len} tokens")
    ids = fitted.prompt_ids + fitted.completion_ids
    return ids, [0] * len(fitted.prompt_ids) + [1] * len(fitted.completion_ids)


@dataclass
class Truncation:
    """What fitting did to a training set (logged in ``train_metrics``)."""

    rows: int = 0
    truncated_rows: int = 0  # lost oldest steps, kept everything else
    dropped_rows: int = 0  # could not fit even without any step: not trained on
    # PPO with stored pi_beta only: truncated rows whose log-probs were scored on the full
    # state, left out (a ratio against another row's log-probs means nothing)
    unscored_rows: int = 0

    def as_metrics(self) -> dict[str, float]:
        return {
            "truncated_rows": float(self.truncated_rows),
            "dropped_rows": float(self.dropped_rows),
            "unscored_rows": float(self.unscored_rows),
        }


def fit_rows(
    rows: list[dict[str, Any]], tokenizer: Any, max_len: int
) -> tuple[list[tuple[dict[str, Any], Fitted]], Truncation]:
    """Every row fitted to ``max_len``; rows that cannot fit are left out and counted."""
    out, report = [], Truncation(rows=len(rows))
    for row in rows:
        fitted = fit(tokenizer, row["system"], row["prompt"], row["completion"], max_len)
        if not fitted.fits:
            report.dropped_rows += 1
            continue
        report.truncated_rows += fitted.dropped_steps > 0
        out.append((row, fitted))
    if rows and not out:
        raise ValueError(
            f"none of {len(rows)} rows fits training.max_seq_len={max_len} even without its "
            "earlier steps (system prompt + question + completion): raise max_seq_len"
        )
    if report.dropped_rows:
        log.warning(
            "%d of %d rows do not fit in %d tokens even without earlier steps; left out",
            report.dropped_rows,
            len(rows),
            max_len,
        )
    return out, report


def ppo_examples(
    rows: list[dict[str, Any]], tokenizer: Any, max_len: int, stored_pi_beta: bool = False
) -> tuple[list[dict[str, Any]], Truncation]:
    """Tokenised PPO examples (with the behaviour log-probs of the completion, when the rows
    carry them; ``truncated``: the row lost steps, so log-probs stored on the full state are
    not this row's) and the truncation report. With ``stored_pi_beta`` (the stored log-probs
    are the only pi_beta) truncated rows are left out and counted as ``unscored_rows``."""
    fitted, report = fit_rows(rows, tokenizer, max_len)
    if stored_pi_beta:
        kept = [(r, f) for r, f in fitted if f.dropped_steps == 0]
        report.unscored_rows = len(fitted) - len(kept)
        if report.unscored_rows:
            log.warning(
                "%d of %d rows lost earlier steps to fit training.max_seq_len and their stored "
                "behaviour log-probs were scored on the full state: left out",
                report.unscored_rows,
                len(fitted),
            )
        fitted = kept
    out = []
    for index, (row, f) in enumerate(fitted):
        behaviour = row.get("behaviour_logprobs")
        if behaviour is not None and len(behaviour) != len(f.completion_ids):
            raise ValueError(
                f"row {index}: {len(behaviour)} behaviour log-probs for "
                f"{len(f.completion_ids)} completion tokens (another tokenizer wrote them?)"
            )
        out.append(
            {
                "input_ids": f.prompt_ids + f.completion_ids,
                "completion_mask": [0] * len(f.prompt_ids) + [1] * len(f.completion_ids),
                "advantage": float(row["advantage"]),
                "index": index,
                "behaviour_logprobs": None if behaviour is None else list(behaviour),
                "truncated": f.dropped_steps > 0,
            }
        )
    return out, report


def group_relative(pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every judged candidate of a step, with advantage = (score - mean) / std over the step's
    candidates (GRPO-style): the judge already scored them all."""
    groups: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in pool:
        groups[(row["question_id"], row["step"])].append(row)
    out = []
    for key in sorted(groups):
        group = groups[key]
        scores = torch.tensor([r["judge_score"] for r in group], dtype=torch.float64)
        std = scores.std(unbiased=False).item()
        for row, score in zip(group, scores.tolist(), strict=True):
            adv = (score - scores.mean().item()) / (std + 1e-6) if std > 0 else 0.0
            out.append({**row, "advantage": adv})
    return out


def sft_records(
    rows: list[dict[str, Any]], tokenizer: Any, max_len: int
) -> tuple[list[dict[str, Any]], Truncation]:
    """Conversational prompt/completion records for TRL's SFTTrainer (completion-only loss),
    fitted by the same rule as PPO's examples (TRL then has nothing left to cut)."""
    fitted, report = fit_rows(rows, tokenizer, max_len)
    records = [
        {
            "prompt": messages(r["system"], f.prompt),
            "completion": [{"role": "assistant", "content": r["completion"]}],
        }
        for r, f in fitted
    ]
    return records, report


def greedy_rows(pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The judge's top-scored candidate of every step (ties: the action name), which is what
    a user gets without rarity-first: the ``training.sft.data: greedy`` baseline."""
    best: dict[tuple[int, int], dict[str, Any]] = {}
    for row in pool:
        key = (row["question_id"], row["step"])
        if key not in best or (-row["judge_score"], row["action"]) < (
            -best[key]["judge_score"],
            best[key]["action"],
        ):
            best[key] = row
    return [best[k] for k in sorted(best)]


@dataclass
class PPOCollator:
    """Right-pads a batch; keeps advantages, example indices and the completion mask."""

    pad_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        pad = lambda seq, v: list(seq) + [v] * (width - len(seq))  # noqa: E731
        return {
            "input_ids": torch.tensor([pad(f["input_ids"], self.pad_id) for f in features]),
            "attention_mask": torch.tensor([pad([1] * len(f["input_ids"]), 0) for f in features]),
            "completion_mask": torch.tensor([pad(f["completion_mask"], 0) for f in features]),
            "advantages": torch.tensor([f["advantage"] for f in features], dtype=torch.float32),
            "index": torch.tensor([f["index"] for f in features]),
        }
