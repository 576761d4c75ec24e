"""A real OpenAI-compatible chat-completions server on loopback, for tests and benchmarks.

FastAPI + uvicorn in a background thread. Knobs (plain attributes, set from the test): latency
per request, status codes to inject on the next requests, scripted replies, logprobs for
the first reply token, and JSON-schema structured output (as constrained decoding would).
It counts the requests that reach it and the API keys it was sent.

It can also act as a provider's prompt cache (``prompt_cache``: the prompt tokens a request
shares, as a prefix, with an earlier request are reported as
``usage.prompt_tokens_details.cached_tokens``) and serves the Batch API: ``/v1/files``
(upload, content) and ``/v1/batches`` (create, retrieve, cancel). A batch answers its
requests with the same replies a direct call would get, once it has been polled
``batch_polls_to_finish`` times, ending as ``batch_outcome`` says ("completed", "expired",
"failed"; ``batch_partial`` requests answered before an expiry), or never ("hold").
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass
class ServerState:
    latency_s: float = 0.0
    inject: list[int] = field(default_factory=list)  # status codes for the next requests
    replies: list[str] = field(default_factory=list)  # scripted replies, consumed in order
    default_reply: str | None = None  # None: echo the last user message
    logprobs: dict[str, float] | None = None  # token -> probability for the first position
    # logprobs computed from the messages (overrides ``logprobs``)
    logprobs_fn: Callable[[list[dict]], dict[str, float]] | None = None
    reply_fn: Callable[[list[dict]], str] | None = None  # reply computed from the messages
    log: list[list[dict]] = field(default_factory=list)  # the messages of every request
    # structured output: the modes honoured ("guided_choice" in extra_body, "json_schema"
    # response_format: an action enum, or a judge's {"score": n}) and the ones refused with
    # HTTP 400; any other is ignored, like a server that does not know it
    structured: set[str] = field(default_factory=set)
    refuse: set[str] = field(default_factory=set)
    bodies: list[dict] = field(default_factory=list)  # every request body
    requests: int = 0
    keys_seen: set[str] = field(default_factory=set)
    usage_tokens: tuple[int, int] | None = None  # reported (prompt, completion) tokens
    prompt_cache: bool = False  # report cached prompt tokens (a shared prefix, in words)
    prompts_seen: list[list[str]] = field(default_factory=list)
    # the Batch API
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict] = field(default_factory=dict)
    uploads: int = 0
    batches_created: int = 0
    batch_polls: int = 0
    batch_requests: int = 0  # requests answered inside batches
    batch_polls_to_finish: int = 1
    batch_outcome: str = "completed"  # completed | expired | failed | hold
    batch_partial: int = 0  # requests an expired batch answered before it expired
    resets: int = 0  # LoopbackOpenAI.reset() calls: which test a request came from
    lock: threading.Lock = field(default_factory=threading.Lock)


def build_app(state: ServerState) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        with state.lock:
            state.requests += 1
            auth = request.headers.get("authorization", "")
            state.keys_seen.add(auth.removeprefix("Bearer "))
            sent_in = state.resets
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
            if state.resets != sent_in:  # its client gave up and its test is over: it must
                # not consume the replies the next test scripted
                return JSONResponse({"error": {"message": "server reset"}}, status_code=503)
        status, payload = complete(state, body)
        return JSONResponse(payload, status_code=status)

    add_batch_api(app, state)
    return app


def complete(state: ServerState, body: dict) -> tuple[int, dict]:
    """One chat completion: (HTTP status, response body)."""
    with state.lock:
        state.log.append(body.get("messages", []))
        state.bodies.append(body)
        status = state.inject.pop(0) if state.inject else None
        reply = state.replies.pop(0) if state.replies else None
    guided = body.get("guided_choice")
    schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
    enum = schema.get("properties", {}).get("action", {}).get("enum")
    asked = {m for m, v in (("guided_choice", guided), ("json_schema", enum)) if v}
    if status is None and asked & state.refuse:
        status = 400
    if status is not None:
        return status, {"error": {"message": f"injected {status}", "type": "test"}}
    messages = body.get("messages", [])
    if reply is None and state.reply_fn is not None:
        reply = state.reply_fn(messages)
    if reply is None:
        reply = state.default_reply
    if reply is None:
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        reply = f"echo: {last[:200]}"
    prefix = ""
    json_schema = (body.get("response_format") or {}).get("type") == "json_schema"
    if "guided_choice" in asked & state.structured:
        reply = reply if reply in guided else guided[0]
    elif "json_schema" in asked & state.structured:
        reply = reply if reply in enum else enum[0]
        prefix, reply = '{"action": "', json.dumps({"action": reply})
    elif json_schema and "json_schema" in state.structured:
        # a judge's score schema; what constrained decoding guarantees: valid JSON of its
        # shape ({"score": n}, or one integer per candidate of a per-state schema)
        keys = list(schema.get("properties", {})) or ["score"]
        found = [int(n) for n in re.findall(r"\b(10|[0-9])\b", reply)]
        if keys != ["score"] and reply.lstrip().startswith("{"):
            found = [int(v) for v in json.loads(reply).values()]
        found += [0] * len(keys)
        reply = json.dumps(dict(zip(keys, found, strict=False)))
    choice: dict[str, Any] = {
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": reply},
    }
    logprobs = state.logprobs_fn(messages) if state.logprobs_fn else state.logprobs
    if body.get("logprobs") and logprobs:
        top = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in logprobs.items()]
        best = max(top, key=lambda t: t["logprob"])
        content = [{**best, "top_logprobs": top}]
        if prefix:  # JSON: the name's first token follows the key
            content.insert(0, {"token": prefix, "logprob": 0.0, "bytes": None, "top_logprobs": []})
        choice["logprobs"] = {"content": content}
    words = [w for m in messages for w in str(m.get("content", "")).split()]
    prompt_tokens = len(words)
    cached = 0
    if state.prompt_cache:
        with state.lock:
            for seen in state.prompts_seen:
                cached = max(cached, _shared_prefix(seen, words))
            state.prompts_seen.append(words)
    completion_tokens = len(reply.split())
    if state.usage_tokens is not None:
        prompt_tokens, completion_tokens = state.usage_tokens
    return 200, (
        {
            "id": f"chatcmpl-{state.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "loopback"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                **(
                    {"prompt_tokens_details": {"cached_tokens": cached}}
                    if state.prompt_cache
                    else {}
                ),
            },
        }
    )


def _shared_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def add_batch_api(app: FastAPI, state: ServerState) -> None:
    """``/v1/files`` and ``/v1/batches``, as OpenAI serves them (the parts a client uses)."""

    @app.post("/v1/files")
    async def upload(request: Request) -> JSONResponse:
        raw = await request.body()
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        form = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + raw)
        content = b""
        for part in form.iter_parts():
            if part.get_param("name", header="content-disposition") == "file":
                content = part.get_payload(decode=True)
        with state.lock:
            state.uploads += 1
            file_id = f"file-{len(state.files) + 1}"
            state.files[file_id] = content
        return JSONResponse(_file(file_id, content, "batch"))

    @app.get("/v1/files/{file_id}/content")
    async def content(file_id: str):
        from fastapi.responses import Response

        return Response(state.files[file_id], media_type="application/octet-stream")

    @app.post("/v1/batches")
    async def create(request: Request) -> JSONResponse:
        body = await request.json()
        with state.lock:
            state.batches_created += 1
            batch_id = f"batch-{len(state.batches) + 1}"
            state.batches[batch_id] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": body["endpoint"],
                "input_file_id": body["input_file_id"],
                "completion_window": body["completion_window"],
                "status": "in_progress",
                "created_at": int(time.time()),
                "output_file_id": None,
                "error_file_id": None,
                "polls": 0,
            }
        return JSONResponse(_batch(state.batches[batch_id]))

    @app.get("/v1/batches/{batch_id}")
    async def retrieve(batch_id: str) -> JSONResponse:
        with state.lock:
            state.batch_polls += 1
            batch = state.batches[batch_id]
            batch["polls"] += 1
            due = batch["status"] == "in_progress" and batch["polls"] >= state.batch_polls_to_finish
        if due and state.batch_outcome != "hold":
            _finish(state, batch)
        return JSONResponse(_batch(batch))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel(batch_id: str) -> JSONResponse:
        with state.lock:
            batch = state.batches[batch_id]
            batch["status"] = "cancelled"
        return JSONResponse(_batch(batch))


def _finish(state: ServerState, batch: dict) -> None:
    """Answer the batch's requests (all, or ``batch_partial`` before an expiry)."""
    lines = [json.loads(x) for x in state.files[batch["input_file_id"]].decode().splitlines() if x]
    outcome = state.batch_outcome
    answered = lines if outcome == "completed" else lines[: state.batch_partial]
    if outcome == "failed":
        answered = []
    rows = []
    for line in answered:
        status, body = complete(state, line["body"])
        rows.append(
            {
                "id": f"req-{line['custom_id'][:8]}",
                "custom_id": line["custom_id"],
                "response": {"status_code": status, "request_id": "r", "body": body},
                "error": None,
            }
        )
    with state.lock:
        state.batch_requests += len(rows)
        if rows:
            file_id = f"file-{len(state.files) + 1}"
            state.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
            batch["output_file_id"] = file_id
        batch["status"] = outcome


def _file(file_id: str, content: bytes, purpose: str) -> dict:
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(content),
        "created_at": int(time.time()),
        "filename": "input.jsonl",
        "purpose": purpose,
        "status": "processed",
    }


def _batch(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "polls"}


class LoopbackOpenAI:
    """Start with ``with LoopbackOpenAI() as server: server.base_url ...``."""

    def __init__(self) -> None:
        self.state = ServerState()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            build_app(self.state),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        with self.state.lock:
            self.state.resets += 1
            fresh = ServerState()
            for name in (
                "latency_s",
                "inject",
                "replies",
                "default_reply",
                "logprobs",
                "logprobs_fn",
                "reply_fn",
                "log",
                "requests",
                "keys_seen",
                "structured",
                "refuse",
                "bodies",
                "prompt_cache",
                "prompts_seen",
                "usage_tokens",
                "files",
                "batches",
                "uploads",
                "batches_created",
                "batch_polls",
                "batch_requests",
                "batch_polls_to_finish",
                "batch_outcome",
                "batch_partial",
            ):
                setattr(self.state, name, getattr(fresh, name))

    def __enter__(self) -> LoopbackOpenAI:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("loopback OpenAI server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def main() -> None:
    """Run the server as its own process (benchmarks: no GIL shared with the client)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--reply", default=None)
    args = parser.parse_args()
    state = ServerState(latency_s=args.latency, default_reply=args.reply)
    uvicorn.run(
        build_app(state), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
