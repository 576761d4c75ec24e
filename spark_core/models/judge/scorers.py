"""Judges score a candidate action 0-10.

- ``OpenAIJudge``: the endpoint's capabilities are probed once (``openai/capabilities.py``); the
  score is the logprob-weighted expectation where logprobs exist, else a structured ``{"score": n}``
  (JSON schema through ``response_format`` or vLLM's guided decoding), else the number parsed from
  the reply. A reply with no score is retried, then recorded as a failed judgement — never silently
  0. ``grade`` keeps the judge's stated integer (the reply's number) beside the expectation, so
  ``judge.grade`` can pick either reading without a new call.
- ``HFJudge``: reads the score from the next-token distribution over the digit tokens in
  batched forward passes (no sampling): deterministic and cheap. The candidates of a step share
  their prompt's prefix, whose KV cache is computed once and reused for every candidate. Its
  ``grade`` is the most probable integer 0-10 (what greedy decoding would state).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch

from spark_core.config import JudgeConfig, default_of
from spark_core.models.hf import shared_prefix
from spark_core.models.hf.backend import HFBackend
from spark_core.models.hf.prefix_cache import (
    Prefix,
    common_prefix_len,
    prefix_groups,
    read_prefix,
    shared_forward,
)
from spark_core.models.judge.local_states import read_columns, score_columns, score_states
from spark_core.models.judge.prompt import SCORE_PREFILL, JudgeItem, judge_messages
from spark_core.models.openai.backend import BackendError, OpenAIBackend
from spark_core.models.openai.capabilities import (
    STRUCTURED_STYLES,
    Capabilities,
    capabilities_for,
    score_from_json,
)
from spark_core.models.prices import cached_tokens
from spark_core.models.requests import ChatRequest, Gate, OnDone
from spark_core.str_enum import StrEnum


class JudgeStatus(StrEnum):
    """How a judgement ended: the ``judge_status`` column of synthesis's ``scores``."""

    OK = "ok"  # a score was read
    FAILED = "failed"  # no score could be read (never read as 0): the error says why


class JudgeMethod(StrEnum):
    """How a score was read: the ``judge_method`` column of synthesis's ``scores``."""

    LOGPROBS = "logprobs"  # openai, per candidate: expectation over the score tokens' logprobs
    STRUCTURED = "structured"  # openai, per candidate: a JSON {"score": n} (response_format)
    TEXT = "text"  # openai, per candidate: the number parsed from the reply
    NEXT_TOKEN = "next_token"  # hf, per candidate: the next-token distribution over the digits
    STRUCTURED_STATE = "structured_state"  # judge.mode per_state: one JSON reply per state
    TEXT_STATE = "text_state"  # per_state: the numbers parsed from one reply per state
    NEXT_TOKEN_STATE = "next_token_state"  # hf per_state: digit distributions in one reply


# the methods whose score is a probability-weighted expectation (its stated grade is separate)
EXPECTATION_METHODS = frozenset(
    {JudgeMethod.LOGPROBS, JudgeMethod.NEXT_TOKEN, JudgeMethod.NEXT_TOKEN_STATE}
)


@dataclass
class Judgement:
    score: float | None
    status: JudgeStatus
    raw: str = ""
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1
    cached: bool = False
    method: str = ""  # a JudgeMethod
    grade: float | None = None  # the stated integer grade (score is the expectation if read)
    cached_prompt_tokens: int = 0  # of prompt_tokens, served by the provider's prompt cache
    batch: bool = False  # billed as part of a Batch API job

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


def stated_grade(method: str, score: float | None, raw: str) -> float | None:
    """The judge's stated grade: the number in its reply where ``score`` is a log-prob
    expectation, else the score itself (already the stated number)."""
    if method == JudgeMethod.LOGPROBS:
        return parse_score(raw)
    return score


class OpenAIJudge:
    """Scores through chat completions, reading the score the best way the endpoint allows:
    the logprob-weighted expectation, else a JSON-schema-constrained ``{"score": n}``, else
    the number parsed from free text."""

    def __init__(
        self,
        backend: OpenAIBackend,
        max_new_tokens: int = default_of(JudgeConfig, "max_new_tokens"),
        attempts: int = default_of(JudgeConfig, "attempts"),
        capabilities: Capabilities | None = None,
    ):
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.attempts = attempts
        self.model_id = backend.model_id
        self.capabilities = capabilities  # None: probed on first use (uncached)

    def request(self, item: JudgeItem) -> ChatRequest:
        return ChatRequest(judge_messages(item), max_new_tokens=self.max_new_tokens)

    @property
    def method(self) -> JudgeMethod:
        caps = self.capabilities
        if caps is None or caps.logprobs:
            return JudgeMethod.LOGPROBS
        return JudgeMethod.STRUCTURED if caps.structured else JudgeMethod.TEXT

    def _ask(self, request: ChatRequest) -> tuple[Any, float | None]:
        """One call in this endpoint's best scoring mode: (response, score or None)."""
        method = self.method
        if method == JudgeMethod.LOGPROBS:
            response = self.backend.chat(request, logprobs=True, top_logprobs=20)
            content = getattr(getattr(response.choices[0], "logprobs", None), "content", None)
            for position in (content or [])[:2]:  # the score may follow a space or "**"
                score = expected_score({t.token: t.logprob for t in position.top_logprobs or []})
                if score is not None:
                    return response, score
            return response, parse_score(response.choices[0].message.content or "")
        if method == JudgeMethod.STRUCTURED:
            style = STRUCTURED_STYLES[self.capabilities.structured]  # type: ignore[union-attr]
            # a JSON object needs a few more tokens than a bare digit
            wide = replace(request, max_new_tokens=max(request.max_new_tokens, 16))
            response = self.backend.chat(wide, **style)
            raw = response.choices[0].message.content or ""
            score = score_from_json(raw)
            return response, score if score is not None else parse_score(raw)
        response = self.backend.chat(request)
        return response, parse_score(response.choices[0].message.content or "")

    def score_one(self, item: JudgeItem) -> Judgement:
        request = self.request(item)
        prompt_tokens = completion_tokens = cached_prompt = 0
        raw, error = "", ""
        for attempt in range(1, self.attempts + 1):
            try:
                response, score = self._ask(request)
            except BackendError as exc:
                error = str(exc)
                continue
            usage = response.usage
            prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
            completion_tokens += getattr(usage, "completion_tokens", 0) or 0
            cached_prompt += cached_tokens(usage)
            raw = response.choices[0].message.content or ""
            if score is not None:
                return Judgement(
                    score,
                    JudgeStatus.OK,
                    raw,
                    "",
                    prompt_tokens,
                    completion_tokens,
                    attempt,
                    method=self.method,
                    grade=stated_grade(self.method, score, raw),
                    cached_prompt_tokens=cached_prompt,
                )
            error = f"no score in the judge's reply {raw[:80]!r}"
        return Judgement(
            None,
            JudgeStatus.FAILED,
            raw,
            error,
            prompt_tokens,
            completion_tokens,
            self.attempts,
            method=self.method,
            cached_prompt_tokens=cached_prompt,
        )

    def score(
        self, items: list[JudgeItem], on_done: OnDone = None, gate: Gate = None
    ) -> list[Judgement]:
        if self.capabilities is None:
            self.capabilities = capabilities_for(self.backend, None)
        return self.backend.map(self.score_one, items, on_done, gate)


class HFJudge:
    def __init__(
        self,
        backend: HFBackend,
        mode: Literal["prefix", "batched", "single"] = default_of(JudgeConfig, "local_batching"),
    ):
        self.backend = backend
        self.mode = mode
        self.model_id = backend.model_id
        tok = backend.tokenizer
        self.digit_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
        if any(i is None or i == tok.unk_token_id for i in self.digit_ids):
            raise ValueError(f"{backend.name}: the tokenizer has no single-token digits")

    def prompt_ids(self, item: JudgeItem) -> list[int]:
        text = self.backend.prompt_text(ChatRequest(judge_messages(item), prefill=SCORE_PREFILL))
        return self.backend.tokenizer(text, add_special_tokens=False).input_ids

    def _scores_from_logits(
        self, at_end: torch.Tensor, after_one: torch.Tensor
    ) -> list[tuple[float, float]]:
        """(E[score], most probable grade) from P(digit) at the prompt's end; '1' splits into
        1 or 10 by P('0'|'1')."""
        digits = torch.tensor(self.digit_ids)
        p = torch.softmax(at_end.float(), dim=-1)[:, digits]
        p = p / p.sum(dim=-1, keepdim=True)
        p_ten = torch.softmax(after_one.float(), dim=-1)[:, self.digit_ids[0]]
        grades = torch.cat([p, (p[:, 1] * p_ten).unsqueeze(-1)], dim=-1)  # P(0..9), P(10)
        grades[:, 1] = p[:, 1] * (1 - p_ten)
        values = torch.arange(11, dtype=torch.float32)
        expected = (grades * values).sum(dim=-1)
        best = grades.argmax(dim=-1)
        return [(round(float(e), 4), float(g)) for e, g in zip(expected, best, strict=True)]

    def _score_rows(
        self, rows: list[list[int]], reuse_prefix: bool, base: Prefix | None = None
    ) -> list[tuple[float, float]]:
        """Each row plus a trailing '1': logits at the prompt's end give P(first digit), the
        logits after the '1' give P('0'|'1') — one forward pass for both. With
        ``reuse_prefix`` the rows' shared prefix is read once (continuing ``base``, the start
        every state shares) and their own parts run on it in groups of similar length (a
        long observation does not pad the short ones)."""
        rows = [r + [self.digit_ids[1]] for r in rows]
        backend = self.backend
        pad = backend.tokenizer.pad_token_id
        values: list[tuple[float, float] | None] = [None] * len(rows)
        with backend.computing():
            prefix, groups = (
                prefix_groups(backend.model, rows, backend.device, base=base)
                if reuse_prefix
                else (None, [list(range(len(rows)))])
            )
            offset = prefix.length if prefix is not None else 0
            for group in groups:
                part = [rows[i] for i in group]
                ends, keep = score_columns([len(r) - offset for r in part])
                fwd = shared_forward(
                    backend.model, part, pad, backend.device, False, keep, prefix=prefix
                )
                scored = self._scores_from_logits(*read_columns(fwd.logits, ends, keep))
                for i, value in zip(group, scored, strict=True):
                    values[i] = value
        return [v for v in values if v is not None]

    def score(self, items: list[JudgeItem], on_done: OnDone = None) -> list[Judgement]:
        rows = [self.prompt_ids(item) for item in items]
        if self.mode == "single":
            units = [[i] for i in range(len(items))]
        elif self.mode == "batched":
            size = self.backend.batch_size
            units = [list(range(s, min(s + size, len(items)))) for s in range(0, len(items), size)]
        else:  # the candidates of one step share everything before the candidate
            groups: dict[tuple, list[int]] = {}
            for i, item in enumerate(items):
                groups.setdefault(item.shared_part, []).append(i)
            units = list(groups.values())
        results: list[Judgement | None] = [None] * len(items)
        base = None  # the prompt start every state shares (the rubric), read once
        shared = common_prefix_len(rows) if self.mode == "prefix" and len(units) > 1 else 0
        if shared:
            with self.backend.computing():
                base = read_prefix(self.backend.model, rows[0][:shared], self.backend.device)
        values: list[tuple[float, float]]
        if base is not None and shared_prefix.supported(self.backend.model):
            # every state's candidates in a few passes, reading rubric and states in place
            with self.backend.computing():
                values = self._scores_from_logits(*score_states(self, rows, units, base))
        else:
            by_row = {}
            for unit in units:
                scored = self._score_rows(
                    [rows[i] for i in unit], reuse_prefix=self.mode == "prefix", base=base
                )
                by_row.update(zip(unit, scored, strict=True))
            values = [by_row[i] for i in range(len(rows))]
        for unit in units:
            for i in unit:
                value, grade = values[i]
                results[i] = Judgement(
                    value,
                    JudgeStatus.OK,
                    f"{value:.2f}",
                    "",
                    len(rows[i]),
                    0,
                    method=JudgeMethod.NEXT_TOKEN,
                    grade=grade,
                )
                if on_done is not None:
                    on_done(i, results[i])
        return [r for r in results if r is not None]
