"""What is asked of a model and what comes back — backend-neutral and hashable: a chat request
and its completion; a policy step with a constrained action (``constrained_actions``) and the
step written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from spark_core.config import ModelConfig, default_of

Message = tuple[str, str]  # (role, content)
OnDone = Callable[[int, Any], None] | None
"""Called with (index, result) as soon as each result exists, so callers can checkpoint."""
Gate = Callable[[int], bool] | None
"""Asked with an item's index just before its request is sent; False skips the item."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat call. Its token limit and temperature default to the model section's; a
    request's seed is its own (callers derive it from a stage's seed, the question and the
    step), 0 unless given. ``to_dict`` is its response-cache key."""

    messages: tuple[Message, ...]
    max_new_tokens: int = default_of(ModelConfig, "max_new_tokens")
    temperature: float = default_of(ModelConfig, "temperature")
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


@dataclass(frozen=True)
class StepRequest:
    """What a constrained step needs: the state, the action names and the token budgets
    (``rollout.thought_tokens`` and ``rollout.input_tokens``: every caller passes them)."""

    messages: tuple[Message, ...]
    names: tuple[str, ...]
    thought_tokens: int
    input_tokens: int
    temperature: float = default_of(ModelConfig, "temperature")
    top_p: float = 1.0
    seed: int = 0  # as ChatRequest's: derived by the caller

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["messages"] = [list(m) for m in self.messages]
        data["names"] = list(self.names)
        return data

    def chat(self, max_new_tokens: int, prefill: str = "") -> ChatRequest:
        return ChatRequest(
            self.messages, max_new_tokens, self.temperature, self.top_p, self.seed, (), prefill
        )


@dataclass
class PolicyStep(Metered):
    thought: str
    action: str  # one of the names, or "invalid" (free-text fallback that did not parse)
    action_input: str
    distribution: dict[str, float] = field(default_factory=dict)  # {} where not available
