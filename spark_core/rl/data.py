"""Training data from ``trajectories`` (or the ``candidate_pool``): chat-formatted prompt /
completion pairs, tokenised so that only the completion (the chosen action text) is trained."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch


def messages(system: str, prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def encode(
    tokenizer: Any, system: str, prompt: str, completion: str, max_len: int
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + completion (with the turn's end token) and a completion mask.
    Too long: the prompt is cut from the left; the completion is never cut."""
    chat = messages(system, prompt)
    prompt_text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        [*chat, {"role": "assistant", "content": completion}], tokenize=False
    )
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template does not extend the prompt with the completion")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
    completion_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False).input_ids
    keep = max(1, max_len - len(completion_ids))
    prompt_ids = prompt_ids[-keep:]
    completion_ids = completion_ids[: max_len - len(prompt_ids)]
    return prompt_ids + completion_ids, [0] * len(prompt_ids) + [1] * len(completion_ids)


def ppo_examples(rows: list[dict[str, Any]], tokenizer: Any, max_len: int) -> list[dict[str, Any]]:
    out = []
    for index, row in enumerate(rows):
        ids, mask = encode(tokenizer, row["system"], row["prompt"], row["completion"], max_len)
        out.append(
            {
                "input_ids": ids,
                "completion_mask": mask,
                "advantage": float(row["advantage"]),
                "index": index,
            }
        )
    return out


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


def sft_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversational prompt/completion records for TRL's SFTTrainer (completion-only loss)."""
    return [
        {
            "prompt": messages(r["system"], r["prompt"]),
            "completion": [{"role": "assistant", "content": r["completion"]}],
        }
        for r in rows
    ]


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
