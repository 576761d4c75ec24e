"""``judge.mode: per_state`` judges (the prompt and the reply's reading: ``state_prompt.py``).

Local (``HFStateJudge``): the local judge reads a per-candidate score from its next-token
distribution over the digits (``HFJudge``). Per state, it writes the JSON reply
``{"1": s1, "2": s2, ...}`` itself, one candidate at a time on one KV cache: at each ``"k": ``
the distribution over 0-10 gives candidate k's expected score (as per_candidate does), the most
likely integer is written, and decoding goes on to the next key — constrained JSON decoding, as
a server's guided JSON would do, so the reply always parses. The written reply is parsed like a
server's (the same failure policy) and kept as the judgement's raw reply.

OpenAI-compatible (``OpenAIStateJudge``): wraps the per-candidate ``OpenAIJudge`` (its backend,
attempts and probed capabilities): the reply is asked for as JSON-schema structured output, or
vLLM's guided JSON, where the endpoint honours it, else parsed from its text. A call's tokens
are shared among the candidates it scored, so per-candidate token columns still sum to what was
billed.
"""

from __future__ import annotations

from typing import Any

import torch

from spark_core.models.hf.prefix_cache import new_cache
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.judge.scorers import (
    HFJudge,
    Judgement,
    JudgeMethod,
    JudgeStatus,
    OpenAIJudge,
)
from spark_core.models.judge.state_prompt import (
    group_states,
    parse_state_reply,
    split_tokens,
    state_request,
    structured_extra,
)
from spark_core.models.judge.state_prompt import state_messages as _messages
from spark_core.models.openai.backend import BackendError
from spark_core.models.openai.capabilities import capabilities_for
from spark_core.models.prices import cached_tokens
from spark_core.models.requests import ChatRequest, Gate, OnDone


class HFStateJudge:
    def __init__(self, inner: HFJudge):
        self.inner = inner
        self.backend = inner.backend
        self.model_id = inner.model_id

    def _ids(self, text: str) -> list[int]:
        return self.backend.tokenizer(text, add_special_tokens=False).input_ids

    @torch.inference_mode()
    def score_state(self, items: list[JudgeItem]) -> list[Judgement]:
        backend, one = self.backend, self.inner.digit_ids[1]
        prompt = self._ids(backend.prompt_text(ChatRequest(_messages(items), prefill='{"1": ')))
        ((arg, cache),) = new_cache(backend.model).items()
        feed, written, expected, generated = prompt, [], [], 0
        with backend.computing():
            for k in range(1, len(items) + 1):
                # the fragment plus a trailing '1': P(first digit) and P('0' | '1') in one pass
                ids = torch.tensor([feed + [one]], device=backend.device)
                out = backend.model(input_ids=ids, use_cache=True, **{arg: cache})
                cache = getattr(out, arg)
                logits = out.logits[0, -2:].float().cpu()
                value, grade = self.inner._scores_from_logits(logits[:1], logits[1:])[0]
                expected.append(value)
                cache.crop(-1)  # drop the probe "1"
                written.append(int(grade))
                tail = "}" if k == len(items) else f', "{k + 1}": '
                feed = self._ids(f"{written[-1]}{tail}")
                generated += len(feed)
        reply = "{" + ", ".join(f'"{k}": {v}' for k, v in enumerate(written, 1)) + "}"
        parsed = parse_state_reply(reply, len(items))
        prompt_share = split_tokens(len(prompt), len(items))
        completion_share = split_tokens(generated, len(items))
        return [
            Judgement(
                expected[k] if parsed[k] is not None else None,
                JudgeStatus.OK if parsed[k] is not None else JudgeStatus.FAILED,
                reply,
                "" if parsed[k] is not None else f"no score for candidate {k + 1}",
                prompt_share[k],
                completion_share[k],
                method=JudgeMethod.NEXT_TOKEN_STATE,
                grade=written[k] if parsed[k] is not None else None,
            )
            for k in range(len(items))
        ]

    def score(self, items: list[JudgeItem], on_done: OnDone = None) -> list[Judgement]:
        results: list[Judgement | None] = [None] * len(items)
        for group in group_states(items):
            for i, judgement in zip(
                group, self.score_state([items[i] for i in group]), strict=True
            ):
                results[i] = judgement
                if on_done is not None:
                    on_done(i, judgement)
        return [r for r in results if r is not None]


class OpenAIStateJudge:
    def __init__(self, inner: OpenAIJudge):
        self.inner = inner

    @property
    def method(self) -> JudgeMethod:
        caps = self.inner.capabilities
        if caps is not None and caps.structured:
            return JudgeMethod.STRUCTURED_STATE
        return JudgeMethod.TEXT_STATE

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
                JudgeStatus.OK if score is not None else JudgeStatus.FAILED,
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
            pending = [i for i in pending if results[i].status != JudgeStatus.OK]  # type: ignore[union-attr]
            if not pending:
                break
        out = []
        for i, judgement in enumerate(results):
            if judgement is None:
                judgement = Judgement(
                    None,
                    JudgeStatus.FAILED,
                    "",
                    last_error,
                    0,
                    0,
                    self.inner.attempts,
                    method=self.method,
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


def state_scorer(scorer: Any) -> Any:
    """The per_state judge over a per-candidate judge's model (``OpenAIJudge`` or ``HFJudge``):
    its ``score(items)`` judges every state among the items, straight from the model."""
    if isinstance(scorer, OpenAIJudge):
        return OpenAIStateJudge(scorer)
    return HFStateJudge(scorer)
