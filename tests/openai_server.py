"""A real OpenAI-compatible chat-completions server on loopback, for tests and benchmarks.

FastAPI + uvicorn in a background thread. Knobs (plain attributes, set from the test): latency
per request, status codes to inject on the next requests, scripted replies, logprobs for
the first reply token, and JSON-schema structured output (as constrained decoding would).
It counts the requests that reach it and the API keys it was sent.
"""

from __future__ import annotations

import asyncio
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
    lock: threading.Lock = field(default_factory=threading.Lock)


def build_app(state: ServerState) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        with state.lock:
            state.requests += 1
            state.log.append(body.get("messages", []))
            state.bodies.append(body)
            auth = request.headers.get("authorization", "")
            state.keys_seen.add(auth.removeprefix("Bearer "))
            status = state.inject.pop(0) if state.inject else None
            reply = state.replies.pop(0) if state.replies else None
        guided = body.get("guided_choice")
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
        enum = schema.get("properties", {}).get("action", {}).get("enum")
        asked = {m for m, v in (("guided_choice", guided), ("json_schema", enum)) if v}
        if status is None and asked & state.refuse:
            status = 400
        if status is not None:
            return JSONResponse(
                {"error": {"message": f"injected {status}", "type": "test"}}, status_code=status
            )
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
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
            # a judge's score schema; what constrained decoding guarantees: valid JSON of its shape
            found = re.search(r"\b(10|[0-9])\b", reply)
            reply = json.dumps({"score": int(found.group(1)) if found else 0})
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
                content.insert(
                    0, {"token": prefix, "logprob": 0.0, "bytes": None, "top_logprobs": []}
                )
            choice["logprobs"] = {"content": content}
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        return JSONResponse(
            {
                "id": f"chatcmpl-{state.requests}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "loopback"),
                "choices": [choice],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(reply.split()),
                    "total_tokens": prompt_tokens + len(reply.split()),
                },
            }
        )

    return app


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
