"""What an OpenAI-compatible endpoint can do for a judge: logprobs, structured output.

Servers differ: OpenAI returns logprobs and honours ``response_format`` JSON schemas; vLLM
does both and also takes guided decoding through ``extra_body``; ``transformers serve``
silently ignores both (and rejects unknown fields with HTTP 422). Asking is the only way to
know, so each endpoint is probed once with a few tiny requests and the answer is cached in
this process and in the response cache's database (``spark check judge`` refreshes it).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from spark_core.models.openai.backend import BackendError, OpenAIBackend
from spark_core.models.requests import ChatRequest
from spark_core.models.response_cache import ResponseCache, request_key

SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": ["score"],
    "additionalProperties": False,
}
PROBE_VERSION = 1

# How each structured-output flavour is asked for: extra keyword arguments of chat().
STRUCTURED_STYLES: dict[str, dict[str, Any]] = {
    "response_format": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "judge_score", "strict": True, "schema": SCORE_SCHEMA},
        }
    },
    # vLLM >= 0.10; older vLLM reads guided_json
    "vllm_structured_outputs": {"extra_body": {"structured_outputs": {"json": SCORE_SCHEMA}}},
    "vllm_guided_json": {"extra_body": {"guided_json": SCORE_SCHEMA}},
}


@dataclass(frozen=True)
class Capabilities:
    endpoint: str
    model: str
    logprobs: bool
    structured: str | None  # a key of STRUCTURED_STYLES, or None
    probe_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"logprobs {'yes' if self.logprobs else 'no'}, structured output "
            f"{self.structured or 'no'}"
        )


def endpoint_of(backend: OpenAIBackend) -> str:
    return backend.base_url or "https://api.openai.com/v1"


def score_from_json(text: str) -> float | None:
    """The integer score of a structured reply ``{"score": 7}``, or None."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    score = value.get("score") if isinstance(value, dict) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        return None
    return float(score) if 0 <= score <= 10 else None


def _has_logprobs(response: Any) -> bool:
    content = getattr(getattr(response.choices[0], "logprobs", None), "content", None)
    return bool(content) and bool(getattr(content[0], "top_logprobs", None))


def probe(backend: OpenAIBackend) -> Capabilities:
    """Ask the endpoint for logprobs, then for each structured-output style, with prompts that
    would not produce the asked-for shape by themselves: only a server that honours the
    request returns it. A request the server rejects counts as 'not supported'."""
    start = time.perf_counter()
    digit = ChatRequest.user("Reply with the digit 7 and nothing else.", max_new_tokens=2)
    try:
        logprobs = _has_logprobs(backend.chat(digit, logprobs=True, top_logprobs=5))
    except BackendError as exc:
        if exc.status is None or exc.status >= 500:  # down, not "unsupported": cache nothing
            raise
        logprobs = False
    hello = ChatRequest.user("Say hello to the reader in one short sentence.", max_new_tokens=16)
    structured = None
    for style, extra in STRUCTURED_STYLES.items():
        try:
            response = backend.chat(hello, **extra)
        except BackendError:
            continue
        if score_from_json(response.choices[0].message.content or "") is not None:
            structured = style
            break
    return Capabilities(
        endpoint_of(backend),
        backend.model_id,
        logprobs,
        structured,
        round(time.perf_counter() - start, 3),
    )


def _key(backend: OpenAIBackend) -> str:
    request = {"endpoint": endpoint_of(backend), "v": PROBE_VERSION}
    return request_key("openai", backend.model_id, request, kind="capabilities")


def capabilities_for(
    backend: OpenAIBackend, cache: ResponseCache | None, refresh: bool = False
) -> Capabilities:
    """The endpoint's capabilities: probed once, then served from the cache's database."""
    key = _key(backend)
    stored = cache.get(key) if cache is not None and not refresh else None
    if stored is not None:
        return Capabilities(**stored)
    found = probe(backend)
    if cache is not None:
        cache.put(key, found.to_dict())
    return found


def forced(backend: OpenAIBackend, scoring: str) -> Capabilities | None:
    """Capabilities a config asserts (``judge.scoring``) instead of probing; None for auto."""
    if scoring == "auto":
        return None
    structured = "response_format" if scoring == "structured" else None
    return Capabilities(endpoint_of(backend), backend.model_id, scoring == "logprobs", structured)
