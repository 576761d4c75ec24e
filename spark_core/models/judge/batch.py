"""``judge.batch``: a synthesis step's judge requests as one job of the OpenAI-compatible
Batch API (``/v1/files`` + ``/v1/batches``), billed at batch prices.

Synthesis can wait minutes for its scores, so its judge calls need not be billed at
interactive prices. The requests the response cache does not hold are written as JSONL,
uploaded and submitted as one batch; its id is checkpointed in the run's response cache
(keyed by the exact set of requests) the moment it exists, so a killed or restarted run polls
the same job instead of paying for it again. Polling backs off up to ``judge.batch_poll_max_s``.
Results are read like direct replies (the same score reading and failure policy) and go
through the response cache. A batch that fails, expires, is cancelled or outlives
``judge.batch_timeout_s`` falls back to direct calls for what it did not return, each let
through by the stage's cost limit as any direct call is.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from spark_core.config import JudgeConfig, default_of
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.judge.scorers import (
    Judgement,
    JudgeMethod,
    JudgeStatus,
    OpenAIJudge,
    expected_score,
    parse_score,
)
from spark_core.models.judge.state_prompt import group_states
from spark_core.models.openai.backend import BackendError, backoff_seconds
from spark_core.models.openai.capabilities import (
    STRUCTURED_STYLES,
    capabilities_for,
    score_from_json,
)
from spark_core.models.prices import cached_tokens
from spark_core.models.requests import ChatRequest, Gate, OnDone
from spark_core.models.response_cache import ResponseCache, request_key
from spark_core.models.stop_rules import StopRules


class BatchedJudge(Protocol):
    """What a batch job uses of the judge it scores for (``judge.Judge``)."""

    scorer: Any
    mode: str
    cache: ResponseCache | None
    stop_rules: StopRules | None

    def keys(self, items: list[JudgeItem]) -> list[str]: ...

    def direct(self, items: list[JudgeItem], on_done: OnDone, gate: Gate) -> list[Any]: ...

    def _state_scorer(self) -> Any: ...


log = logging.getLogger(__name__)
DONE = {"completed"}
GIVEN_UP = {"failed", "expired", "cancelled", "cancelling"}


@dataclass
class Unit:
    """One request of the batch: a candidate (per_candidate) or a state (per_state)."""

    custom_id: str
    indices: list[int]  # the items it judges
    body: dict[str, Any]


def chat_body(model: str, request: ChatRequest, extra: dict[str, Any]) -> dict[str, Any]:
    """A chat-completions request body, as ``OpenAIBackend.chat`` would send it."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": r, "content": c} for r, c in request.messages],
        "max_tokens": request.max_new_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
    }
    if request.stop:
        body["stop"] = list(request.stop)
    for key, value in extra.items():
        if key == "extra_body":  # vLLM's guided decoding: top-level fields of the body
            body.update(value)
        else:
            body[key] = value
    return body


def candidate_extra(judge: OpenAIJudge) -> dict[str, Any]:
    """What a per-candidate request asks for beyond the chat: logprobs or a JSON score."""
    method = judge.method
    if method == JudgeMethod.LOGPROBS:
        return {"logprobs": True, "top_logprobs": 20}
    if method == JudgeMethod.STRUCTURED:
        return STRUCTURED_STYLES[judge.capabilities.structured]  # type: ignore[union-attr]
    return {}


def candidate_score(method: str, response: Any) -> float | None:
    """A per-candidate score read from a chat completion, as ``OpenAIJudge`` reads it."""
    choice = response.choices[0]
    text = choice.message.content or ""
    if method == JudgeMethod.LOGPROBS:
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        for position in (content or [])[:2]:
            score = expected_score({t.token: t.logprob for t in position.top_logprobs or []})
            if score is not None:
                return score
    if method == JudgeMethod.STRUCTURED:
        score = score_from_json(text)
        if score is not None:
            return score
    return parse_score(text)


class BatchJudging:
    def __init__(
        self,
        poll_max_s: float = default_of(JudgeConfig, "batch_poll_max_s"),
        timeout_s: float = default_of(JudgeConfig, "batch_timeout_s"),
    ):
        self.poll_min_s = 1.0
        self.poll_max_s = poll_max_s
        self.timeout_s = timeout_s
        self.sleep: Callable[[float], None] = time.sleep  # tests stop a poll here
        self.submitted: list[str] = []  # batch ids this process created (for the log)

    # -- requests -------------------------------------------------------------------------
    def units(self, judge: BatchedJudge, items: list[JudgeItem], keys: list[str]) -> list[Unit]:
        scorer: OpenAIJudge = judge.scorer  # type: ignore[assignment]
        if judge.mode == "per_state":
            state = judge._state_scorer()
            out = []
            for group in group_states(items):
                request, extra = state.call_args([items[i] for i in group])
                body = chat_body(scorer.model_id, request, extra)
                out.append(Unit(keys[group[0]], group, body))
            return out
        extra = candidate_extra(scorer)
        return [
            Unit(keys[i], [i], chat_body(scorer.model_id, scorer.request(item), extra))
            for i, item in enumerate(items)
        ]

    def judgements(self, judge: BatchedJudge, unit: Unit, items: list[JudgeItem], body: dict):
        """The judgements of one unit from its result's response body."""
        from openai.types.chat import ChatCompletion

        response = ChatCompletion.model_validate(body)
        usage = response.usage
        if judge.mode == "per_state":
            reply = response.choices[0].message.content or ""
            state = judge._state_scorer()
            return state.judgements([items[i] for i in unit.indices], reply, usage, 1, batch=True)
        scorer: OpenAIJudge = judge.scorer  # type: ignore[assignment]
        score = candidate_score(scorer.method, response)
        raw = response.choices[0].message.content or ""
        return [
            Judgement(
                score,
                JudgeStatus.OK if score is not None else JudgeStatus.FAILED,
                raw,
                "" if score is not None else f"no score in the judge's reply {raw[:80]!r}",
                getattr(usage, "prompt_tokens", 0) or 0,
                getattr(usage, "completion_tokens", 0) or 0,
                method=scorer.method,
                cached_prompt_tokens=cached_tokens(usage),
                batch=True,
            )
        ]

    # -- the job --------------------------------------------------------------------------
    def _api(self, judge: BatchedJudge, fn: Callable[[], Any]) -> Any:
        """One Batch API call, retried like a chat call on 429/5xx and dropped connections."""
        backend = judge.scorer.backend  # type: ignore[union-attr]
        for attempt in range(backend.max_retries + 1):
            try:
                return fn()
            except Exception as exc:
                if not backend._retryable(exc) or attempt == backend.max_retries:
                    raise BackendError(f"batch API: {type(exc).__name__}: {exc}"[:300]) from None
                time.sleep(backoff_seconds(attempt, backend._rng))
        raise AssertionError("unreachable")

    def _job_key(self, judge: BatchedJudge, units: list[Unit]) -> str:
        ids = sorted(u.custom_id for u in units)
        return request_key("openai", judge.scorer.model_id, {"units": ids}, kind="batch_job")

    def _submit(self, judge: BatchedJudge, units: list[Unit]) -> str:
        client = judge.scorer.backend.client  # type: ignore[union-attr]
        lines = [
            json.dumps(
                {
                    "custom_id": u.custom_id,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": u.body,
                }
            )
            for u in units
        ]
        data = ("\n".join(lines) + "\n").encode()
        upload = self._api(
            judge,
            lambda: client.files.create(file=("judge.jsonl", io.BytesIO(data)), purpose="batch"),
        )
        batch = self._api(
            judge,
            lambda: client.batches.create(
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"spark": "judge"},
            ),
        )
        self.submitted.append(batch.id)
        log.info("judge batch %s submitted: %d requests", batch.id, len(units))
        return batch.id

    def _wait(self, judge: BatchedJudge, batch_id: str, since: float) -> Any:
        """Poll until the batch is done or given up (or has run past the timeout)."""
        client = judge.scorer.backend.client  # type: ignore[union-attr]
        polls = 0
        while True:
            batch = self._api(judge, lambda: client.batches.retrieve(batch_id))
            if batch.status in DONE | GIVEN_UP:
                return batch
            if time.time() - since > self.timeout_s:
                log.warning("judge batch %s: past judge.batch_timeout_s, cancelling", batch_id)
                try:
                    return self._api(judge, lambda: client.batches.cancel(batch_id))
                except BackendError:
                    return batch
            self.sleep(min(self.poll_max_s, self.poll_min_s * 2**polls))
            polls += 1

    def _results(self, judge: BatchedJudge, batch: Any) -> dict[str, dict]:
        """custom_id -> response body of every request the batch finished (a failed, expired
        or cancelled batch may still have finished some)."""
        file_id = getattr(batch, "output_file_id", None)
        if not file_id:
            return {}
        client = judge.scorer.backend.client  # type: ignore[union-attr]
        text = self._api(judge, lambda: client.files.content(file_id)).text
        out = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            response = row.get("response") or {}
            if response.get("status_code") == 200 and response.get("body"):
                out[row["custom_id"]] = response["body"]
        return out

    def score(
        self, judge: BatchedJudge, items: list[JudgeItem], on_done: OnDone, gate: Gate
    ) -> list[Judgement | None]:
        """Judge ``items`` (those the response cache lacks) as one batch job, resuming the job
        of an earlier run of the same requests; what the job does not return is judged by
        direct calls."""
        scorer: OpenAIJudge = judge.scorer  # type: ignore[assignment]
        if scorer.capabilities is None:
            scorer.capabilities = capabilities_for(scorer.backend, judge.cache)
        keys = judge.keys(items)
        units = self.units(judge, items, keys)
        results: list[Judgement | None] = [None] * len(items)
        ledger = judge.cache
        job_key = self._job_key(judge, units)
        stored = ledger.get(job_key) if ledger is not None else None
        held: dict[int, float] = {}
        if stored is None:
            # the cost limit admits every request before the job is bought (its worst case at
            # batch prices); if it refuses one, nothing is bought and the stage stops
            stop_rules = judge.stop_rules
            admitted = []
            for unit in units:
                verdicts = [
                    stop_rules.admit(items[i], batch=True) if stop_rules else (True, 0.0)
                    for i in unit.indices
                ]
                held.update({i: usd for i, (_, usd) in zip(unit.indices, verdicts, strict=True)})
                if all(ok for ok, _ in verdicts):
                    admitted.append(unit)
            if len(admitted) < len(units):
                self._release(judge, held)
                return results  # the stage stops on the cost limit; nothing was bought
            since = time.time()
            batch_id = self._submit(judge, units)
            if ledger is not None:
                ledger.put(job_key, {"batch_id": batch_id, "submitted_at": since})
        else:
            batch_id, since = stored["batch_id"], stored["submitted_at"]
            log.info("judge batch %s: resuming an earlier run's job", batch_id)
        batch = self._wait(judge, batch_id, since)
        bodies = self._results(judge, batch)
        self._release(judge, held)
        rest: list[int] = []
        for unit in units:
            body = bodies.get(unit.custom_id)
            if body is None:
                rest += unit.indices
                continue
            for i, judgement in zip(
                unit.indices, self.judgements(judge, unit, items, body), strict=True
            ):
                results[i] = judgement
                if on_done is not None:
                    on_done(i, judgement)
        if ledger is not None:
            ledger.put(
                job_key, {"batch_id": batch_id, "submitted_at": since, "status": batch.status}
            )
        if rest:
            log.warning(
                "judge batch %s ended %s with %d of %d requests unanswered: judging them directly",
                batch_id,
                batch.status,
                len(rest),
                len(items),
            )
            direct = judge.direct(
                [items[i] for i in rest],
                None if on_done is None else (lambda j, r: on_done(rest[j], r)),
                None if gate is None else (lambda j: gate(rest[j])),
            )
            for j, judgement in enumerate(direct):
                results[rest[j]] = judgement
        return results

    @staticmethod
    def _release(judge: BatchedJudge, held: dict[int, float]) -> None:
        budget = judge.stop_rules.budget if judge.stop_rules is not None else None
        if budget is not None:
            for usd in held.values():
                budget.settle(usd, 0.0)
