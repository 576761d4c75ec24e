"""What is asked of a model and what comes back — backend-neutral and hashable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

Message = tuple[str, str]  # (role, content)
OnDone = Callable[[int, Any], None] | None
"""Called with (index, result) as soon as each result exists, so callers can checkpoint."""
Gate = Callable[[int], bool] | None
"""Asked with an item's index just before its request is sent; False skips the item."""


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    prefill: str = ""  # text the assistant turn starts with (hf backend)
    logprobs: bool = False  # ask for the generated tokens' log-probs (openai backend)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.logprobs:  # left out when off: the cache keys of earlier requests hold
            del data["logprobs"]
        data["messages"] = [list(m) for m in self.messages]
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def user(cls, content: str, system: str | None = None, **kwargs: Any) -> ChatRequest:
        messages: list[Message] = [("system", system)] if system else []
        messages.append(("user", content))
        return cls(messages=tuple(messages), **kwargs)


@dataclass(kw_only=True)
class Metered:
    """What every model answer carries besides its content: its tokens, why it stopped,
    whether the response cache served it, and the backend's extras."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Completion(Metered):
    text: str
