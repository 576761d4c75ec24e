"""Judges score a candidate action 0-10.

- ``OpenAIJudge``: asks for logprobs and takes the probability-weighted expected score when
  the server returns them; otherwise parses the score from the reply, robustly. A reply with no
  score is retried, then recorded as a failed judgement — never silently 0.
- ``HFJudge``: reads the score from the next-token distribution over the digit tokens in
  batched forward passes (no sampling): deterministic and cheap. The candidates of a step share
  their prompt's prefix, whose KV cache is computed once and reused for every candidate.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from spark_core.models.hf_backend import HFBackend
from spark_core.models.judge_prompt import SCORE_PREFILL, JudgeItem, judge_messages
from spark_core.models.openai_backend import BackendError, OpenAIBackend
from spark_core.models.requests import ChatRequest


@dataclass
class Judgement:
    score: float | None
    status: Literal["ok", "failed"]
    raw: str = ""
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SCORE_PATTERNS = (
    re.compile(r"score\s*(?:is|of|=|:)?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE),
    re.compile(r"^\W*(\d+(?:\.\d+)?)\b"),
    re.compile(r"\b(\d+(?:\.\d+)?)\b"),
)


def parse_score(text: str) -> float | None:
    """The score in a judge's reply ('7', 'Score: 7/10', '**8** out of 10'...), or None."""
    for pattern in _SCORE_PATTERNS:
        for match in pattern.finditer(text):
            value = float(match.group(1))
            if 0 <= value <= 10:
                return value
    return None


def expected_score(top_logprobs: dict[str, float]) -> float | None:
    """Probability-weighted mean over the tokens that are integers 0-10, or None."""
    mass, total = 0.0, 0.0
    for token, logprob in top_logprobs.items():
        stripped = token.strip()
        if stripped.isdigit() and 0 <= int(stripped) <= 10:
            p = math.exp(logprob)
            mass += p
            total += p * int(stripped)
    return total / mass if mass > 0 else None


class OpenAIJudge:
    def __init__(self, backend: OpenAIBackend, max_new_tokens: int = 8, attempts: int = 3):
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.attempts = attempts
        self.model_id = backend.model_id

    def request(self, item: JudgeItem) -> ChatRequest:
        return ChatRequest(judge_messages(item), max_new_tokens=self.max_new_tokens)

    def _one(self, item: JudgeItem) -> Judgement:
        request = self.request(item)
        prompt_tokens = completion_tokens = 0
        raw, error = "", ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.backend.chat(request, logprobs=True, top_logprobs=20)
            except BackendError as exc:
                error = str(exc)
                continue
            usage = response.usage
            prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
            completion_tokens += getattr(usage, "completion_tokens", 0) or 0
            choice = response.choices[0]
            raw = choice.message.content or ""
            score = None
            content = getattr(getattr(choice, "logprobs", None), "content", None)
            if content:
                for position in content[:2]:  # the score token may follow a space or "**"
                    top = {t.token: t.logprob for t in (position.top_logprobs or [])}
                    score = expected_score(top)
                    if score is not None:
                        break
            if score is None:
                score = parse_score(raw)
            if score is not None:
                return Judgement(score, "ok", raw, "", prompt_tokens, completion_tokens, attempt)
            error = f"no score in the judge's reply {raw[:80]!r}"
        return Judgement(
            None, "failed", raw, error, prompt_tokens, completion_tokens, self.attempts
        )

    def score(self, items: list[JudgeItem]) -> list[Judgement]:
        return self.backend.map(self._one, items)


class HFJudge:
    def __init__(self, backend: HFBackend, mode: Literal["prefix", "batched", "single"] = "prefix"):
        self.backend = backend
        self.mode = mode
        self.model_id = backend.model_id
        tok = backend.tokenizer
        self.digit_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
        if any(i is None or i == tok.unk_token_id for i in self.digit_ids):
            raise ValueError(f"{backend.name}: the tokenizer has no single-token digits")
        # transformers 5.x renamed past_key_values to cache; support both
        base = getattr(backend.model, "get_base_model", lambda: backend.model)()
        params = inspect.signature(base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def prompt_ids(self, item: JudgeItem) -> list[int]:
        text = self.backend.prompt_text(ChatRequest(judge_messages(item), prefill=SCORE_PREFILL))
        return self.backend.tokenizer(text, add_special_tokens=False).input_ids

    def _scores_from_logits(self, at_end: torch.Tensor, after_one: torch.Tensor) -> list[float]:
        """E[score] from P(digit) at the prompt's end; '1' splits into 1 or 10 by P('0'|'1')."""
        digits = torch.tensor(self.digit_ids)
        p = torch.softmax(at_end.float(), dim=-1)[:, digits]
        p = p / p.sum(dim=-1, keepdim=True)
        p_ten = torch.softmax(after_one.float(), dim=-1)[:, self.digit_ids[0]]
        values = torch.arange(10, dtype=torch.float32)
        expected = (p * values).sum(dim=-1) + p[:, 1] * p_ten * 9.0  # "1" -> "10" adds 9
        return [round(float(v), 4) for v in expected]

    @torch.inference_mode()
    def _forward(self, rows: list[list[int]], past=None, prefix_len: int = 0) -> tuple:
        """Right-padded rows, each ending in an extra '1'; logits at each row's end and after
        the '1'."""
        one = self.digit_ids[1]
        rows = [r + [one] for r in rows]
        width = max(len(r) for r in rows)
        pad = self.backend.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        device = self.backend.device
        kwargs: dict[str, Any] = {}
        if past is not None:
            full_mask = torch.cat([torch.ones(len(rows), prefix_len, dtype=mask.dtype), mask], 1)
            positions = torch.arange(prefix_len, prefix_len + width).expand(len(rows), -1)
            kwargs = {self._cache_arg: past, "position_ids": positions.to(device)}
            mask = full_mask
        with self.backend._adapter_context():
            logits = self.backend.model(
                input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs
            ).logits
        ends = torch.tensor([len(r) - 2 for r in rows])
        index = torch.arange(len(rows))
        return logits[index, ends].cpu(), logits[index, ends + 1].cpu()

    @torch.inference_mode()
    def _prefix_group(self, rows: list[list[int]]) -> list[float]:
        shortest = min(len(r) for r in rows)
        common = 0
        while common < shortest - 1 and all(r[common] == rows[0][common] for r in rows):
            common += 1
        if common == 0 or len(rows) == 1:
            return self._scores_from_logits(*self._forward(rows))
        prefix = torch.tensor([rows[0][:common]], device=self.backend.device)
        with self.backend._adapter_context():
            out = self.backend.model(input_ids=prefix, use_cache=True)
        past = getattr(out, self._cache_arg)
        past.batch_repeat_interleave(len(rows))
        return self._scores_from_logits(*self._forward([r[common:] for r in rows], past, common))

    def score(self, items: list[JudgeItem]) -> list[Judgement]:
        rows = [self.prompt_ids(item) for item in items]
        scores: list[float] = [0.0] * len(items)
        if self.mode == "single":
            for i, row in enumerate(rows):
                scores[i] = self._scores_from_logits(*self._forward([row]))[0]
        elif self.mode == "batched":
            for start in range(0, len(rows), self.backend.batch_size):
                chunk = rows[start : start + self.backend.batch_size]
                scores[start : start + len(chunk)] = self._scores_from_logits(*self._forward(chunk))
        else:
            groups: dict[tuple, list[int]] = {}
            for i, item in enumerate(items):
                groups.setdefault(item.shared_part, []).append(i)
            for indices in groups.values():
                for i, s in zip(
                    indices, self._prefix_group([rows[i] for i in indices]), strict=True
                ):
                    scores[i] = s
        return [
            Judgement(s, "ok", f"{s:.2f}", "", len(r), 0) for s, r in zip(scores, rows, strict=True)
        ]
