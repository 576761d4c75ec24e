"""``per_state`` judging on an OpenAI-compatible endpoint (see ``judge_state.py``).

Wraps the per-candidate ``OpenAIJudge`` (its backend, attempts and probed capabilities): the
reply is asked for as JSON-schema structured output, or vLLM's guided JSON, where the endpoint
honours it, else parsed from its text. A call's tokens are shared among the candidates it
scored, so per-candidate token columns still sum to what was billed.
"""

from __future__ import annotations

from typing import Any

from spark_core.models.capabilities import capabilities_for
from spark_core.models.judge import Judgement, OpenAIJudge
from spark_core.models.judge_prices import cached_tokens
from spark_core.models.judge_prompt import JudgeItem
from spark_core.models.judge_state import (
    group_states,
    parse_state_reply,
    split_tokens,
    state_request,
    structured_extra,
)
from spark_core.models.openai_backend import BackendError
from spark_core.models.requests import ChatRequest, Gate, OnDone


class OpenAIStateJudge:
    def __init__(self, inner: OpenAIJudge):
        self.inner = inner

    @property
    def method(self) -> str:
        caps = self.inner.capabilities
        return "structured_state" if caps is not None and caps.structured else "text_state"

    def call_args(self, items: list[JudgeItem]) -> tuple[ChatRequest, dict[str, Any]]:
        """The request for one state's candidates and chat()'s extra arguments (batch jobs
        build their request bodies from the same)."""
        request = state_request(items, self.inner.max_new_tokens)
        caps = self.inner.capabilities
        extra = structured_extra(caps.structured, len(items)) if caps and caps.structured else {}
        return request, extra

    def judgements(
        self, items: list[JudgeItem], reply: str, usage: Any, attempt: int, batch: bool = False
    ) -> list[Judgement]:
        """Judgements of one state's candidates from one reply (a missing score fails only its
        candidate); the call's tokens are shared among them."""
        n = len(items)
        scores = parse_state_reply(reply, n)
        prompt = split_tokens(getattr(usage, "prompt_tokens", 0) or 0, n)
        completion = split_tokens(getattr(usage, "completion_tokens", 0) or 0, n)
        cached = split_tokens(cached_tokens(usage), n)
        return [
            Judgement(
                score,
                "ok" if score is not None else "failed",
                reply,
                "" if score is not None else f"no score for candidate {k} in {reply[:80]!r}",
                prompt[k - 1],
                completion[k - 1],
                attempt,
                method=self.method,
                cached_prompt_tokens=cached[k - 1],
                batch=batch,
            )
            for k, score in enumerate(scores, 1)
        ]

    def score_state(self, items: list[JudgeItem]) -> list[Judgement]:
        """One state's candidates; the candidates still without a score are asked again (on
        their own list), up to ``attempts`` calls."""
        results: list[Judgement | None] = [None] * len(items)
        totals = [[0, 0, 0] for _ in items]  # prompt, completion, cached tokens per candidate
        pending = list(range(len(items)))
        last_error = ""
        for attempt in range(1, self.inner.attempts + 1):
            request, extra = self.call_args([items[i] for i in pending])
            try:
                response = self.inner.backend.chat(request, **extra)
            except BackendError as exc:
                last_error = str(exc)
                continue
            reply = response.choices[0].message.content or ""
            fresh = self.judgements([items[i] for i in pending], reply, response.usage, attempt)
            for i, judgement in zip(pending, fresh, strict=True):
                totals[i][0] += judgement.prompt_tokens
                totals[i][1] += judgement.completion_tokens
                totals[i][2] += judgement.cached_prompt_tokens
                results[i] = judgement
            pending = [i for i in pending if results[i].status != "ok"]  # type: ignore[union-attr]
            if not pending:
                break
        out = []
        for i, judgement in enumerate(results):
            if judgement is None:
                judgement = Judgement(
                    None, "failed", "", last_error, 0, 0, self.inner.attempts, method=self.method
                )
            judgement.prompt_tokens, judgement.completion_tokens = totals[i][:2]
            judgement.cached_prompt_tokens = totals[i][2]
            out.append(judgement)
        return out

    def score(
        self, items: list[JudgeItem], on_done: OnDone = None, gate: Gate = None
    ) -> list[Judgement | None]:
        """Every state among ``items``, ``concurrency`` states at a time; a state is sent
        only when the gate admits all of its candidates."""
        if self.inner.capabilities is None:
            self.inner.capabilities = capabilities_for(self.inner.backend, None)
        groups = group_states(items)
        results: list[Judgement | None] = [None] * len(items)

        def one(group: list[int]) -> None:
            if gate is not None and not all([gate(i) for i in group]):
                return None
            for i, judgement in zip(
                group, self.score_state([items[i] for i in group]), strict=True
            ):
                results[i] = judgement
                if on_done is not None:
                    on_done(i, judgement)

        self.inner.backend.map(one, groups)
        return results
