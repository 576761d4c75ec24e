"""``spark check judge|generator``: can the configured endpoint do its job, before a run pays
for it?

The judge check scores calibration items — a clearly good and a clearly bad candidate step
for each of a few known questions — and reports the parse rate, what the endpoint supports
(logprobs, structured output), latency, and whether good ranks above bad. The generator
check sends a real rollout request and a final-answer request. A judge whose parse rate is
below ``1 - judge.max_failure_rate`` is unusable; synthesis runs the same check first and
remembers a passing one per endpoint and model.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from spark_core.config import RunConfig
from spark_core.models.backends import make_backend
from spark_core.models.judge.agreement import Agreement, score_plainly
from spark_core.models.judge.agreement import agreement as measure_agreement
from spark_core.models.judge.judge import make_judge
from spark_core.models.judge.per_state import state_scorer
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.judge.scorers import HFJudge, JudgeStatus
from spark_core.models.openai.backend import BackendError
from spark_core.models.openai.capabilities import capabilities_for, endpoint_of
from spark_core.models.requests import ChatRequest
from spark_core.models.response_cache import ResponseCache, request_key
from spark_core.protocol import Question, policy_messages
from spark_core.synthesis.rollout import answer_request

CHECK_VERSION = 1


def _item(question: str, options: tuple[str, ...], action: str, tool_input: str, output: str):
    """A calibration candidate; its thought names the action, as a policy's thought would."""
    return JudgeItem(
        question=question,
        options=options,
        trajectory="",
        action=action,
        tool_input=tool_input,
        tool_output=output,
        thought=f"I will use {action} for this step.",
    )


_PENCILS = ("A pencil costs $0.35. How much do 12 pencils cost?", ("$3.50", "$4.20", "$4.50"))
_WATER = ("What is the molar mass of water (H2O) in g/mol?", ("16.0", "18.0", "20.0", "34.0"))
_HOURS = ("How many seconds are in 3 hours?", ("1,080", "10,800", "18,000", "108,000"))
CALIBRATION: tuple[tuple[JudgeItem, JudgeItem], ...] = (
    (
        _item(*_PENCILS, "calculator", "0.35 * 12", "4.2"),
        _item(*_PENCILS, "knowledge_search", "history of the pencil", "Pencils date to 1795."),
    ),
    (
        _item(*_WATER, "chemistry", "molar mass H2O", "molar mass of H2O: 18.015 g/mol"),
        _item(*_WATER, "finance", "npv 0.05 100 200", "NPV = 276.64"),
    ),
    (
        _item(*_HOURS, "unit_converter", "3 hours to seconds", "10800 second"),
        _item(
            *_HOURS, "cot", "3 hours is 3 x 60 = 180 seconds.", "3 hours is 3 x 60 = 180 seconds."
        ),
    ),
)
"""(clearly good, clearly bad) candidate steps for known questions."""
STATE_THOUGHT = "I will pick the action that helps most for this step."
"""The thought both candidates of a question share when they are judged as one state."""


@dataclass
class CheckReport:
    role: str
    backend: str
    model: str
    endpoint: str
    items: int = 0
    parsed: int = 0
    logprobs: str = "no"
    structured: str = "no"
    method: str = ""
    latency_s: float = 0.0  # median seconds per call
    ranked: int = 0  # calibration pairs where good scored above bad
    pairs: int = 0
    replies: list[str] = field(default_factory=list)
    # per_candidate vs per_state on the calibration items (models/judge/agreement.py)
    agreement: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)  # each makes the endpoint unusable
    warnings: list[str] = field(default_factory=list)

    @property
    def parse_rate(self) -> float:
        return self.parsed / self.items if self.items else 0.0

    @property
    def usable(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [
            f"{self.role}: {self.backend}:{self.model} at {self.endpoint}",
            f"  replies parsed:     {self.parsed}/{self.items} ({self.parse_rate:.0%})",
            f"  logprobs:           {self.logprobs}",
            f"  structured output:  {self.structured}",
        ]
        if self.method:
            out.append(f"  score read from:    {self.method}")
        out.append(f"  latency:            {self.latency_s:.2f} s per judgement (median)")
        if self.pairs:
            out.append(f"  good above bad:     {self.ranked}/{self.pairs} calibration pairs")
        if self.agreement is not None:
            out += [f"  {line}" for line in Agreement(**self.agreement).lines()]
        out += [f"  sample reply:       {r[:100]!r}" for r in self.replies[:3]]
        out += [f"  warning: {w}" for w in self.warnings]
        out += [f"  PROBLEM: {p}" for p in self.problems]
        out.append(f"  verdict:            {'usable' if self.usable else 'NOT USABLE'}")
        return out

    def error(self) -> str:
        replies = "; ".join(repr(r[:100]) for r in self.replies[:3]) or "none"
        return (
            f"the {self.role} {self.model} at {self.endpoint} failed its preflight check: "
            f"{'; '.join(self.problems)}. Sample replies: {replies}. What to do: run `spark "
            f"check {self.role} -c CONFIG` for the details; use a {self.role} that can do the "
            "job (a stronger model, or a server with logprobs or JSON-schema output such as "
            f"OpenAI or vLLM), or set {self.role}.preflight=false to run regardless."
        )


def check_judge(cfg: RunConfig, cache: ResponseCache | None, agreement: bool = True) -> CheckReport:
    """Score the calibration items on the configured judge (never from the response cache);
    with ``agreement``, in both judge modes, and how far the two agree. The parse rate and
    ranking are read in the configured ``judge.mode``."""
    jc = cfg.judge
    judge = make_judge(jc, cache)
    report = CheckReport("judge", jc.backend, jc.name, judge.endpoint)
    items = [item for pair in CALIBRATION for item in pair]
    if isinstance(judge.scorer, HFJudge):
        report.logprobs = report.structured = "n/a (local: next-token distribution)"
        start = time.perf_counter()
        judgements = judge.scorer.score(items)
        report.latency_s = (time.perf_counter() - start) / len(items)
    else:
        try:  # what the endpoint supports, probed afresh (and cached for the run)
            caps = capabilities_for(judge.scorer.backend, cache, refresh=True)
        except BackendError as exc:
            report.problems.append(f"endpoint unreachable: {exc}")
            return report
        if jc.scoring == "auto":
            judge.scorer.capabilities = caps  # else the scorer keeps what judge.scoring says
        report.logprobs = "yes" if caps.logprobs else "no"
        report.structured = caps.structured or "no"
        seconds, judgements = [], []
        for item in items:  # one at a time: the latency of one call
            start = time.perf_counter()
            judgements.append(judge.scorer.score_one(item))
            seconds.append(time.perf_counter() - start)
        report.latency_s = statistics.median(seconds)
    if agreement or jc.mode == "per_state":
        # a state's candidates share their thought: each question's pair, as one state
        shared = [replace(i, thought=STATE_THOUGHT) for i in items]
        per_state = state_scorer(judge.scorer).score(shared)
        if agreement:
            one = [j.score for j in score_plainly(judge.scorer, shared)]
            found = measure_agreement(
                one, [j.score for j in per_state], cfg.rollout.viable_threshold
            )
            report.agreement = found.to_dict()
        if jc.mode == "per_state":
            judgements = per_state
    report.items = len(items)
    report.parsed = sum(j.status == JudgeStatus.OK for j in judgements)
    report.method = ", ".join(sorted({j.method for j in judgements if j.status == JudgeStatus.OK}))
    failed = [j.raw or j.error for j in judgements if j.status != JudgeStatus.OK]
    report.replies = (failed or [j.raw for j in judgements])[:3]  # failures first
    report.pairs = len(CALIBRATION)
    scores = [j.score for j in judgements]
    report.ranked = sum(
        g is not None and b is not None and g > b
        for g, b in zip(scores[::2], scores[1::2], strict=True)
    )
    floor = 1 - jc.max_failure_rate
    if report.parsed == 0 or report.parse_rate < floor:
        report.problems.append(
            f"only {report.parse_rate:.0%} of its replies carry a score "
            f"(synthesis stops below {floor:.0%}: judge.max_failure_rate)"
        )
    if report.ranked < report.pairs:
        report.warnings.append(
            f"good ranked above bad in only {report.ranked} of {report.pairs} calibration pairs"
        )
    return report


def check_generator(cfg: RunConfig, cache: ResponseCache | None, q: Question) -> CheckReport:
    """One rollout request (a thought) and one final-answer request on question ``q``."""
    gc = cfg.generator
    backend = make_backend(gc)
    endpoint = endpoint_of(backend) if gc.backend == "openai" else "local (transformers)"
    report = CheckReport("generator", gc.backend, gc.name, endpoint)
    if gc.backend == "openai":
        try:
            caps = capabilities_for(backend, cache, refresh=True)
        except BackendError as exc:
            report.problems.append(f"endpoint unreachable: {exc}")
            return report
        report.logprobs = "yes" if caps.logprobs else "no"
        report.structured = caps.structured or "no"
    else:
        report.logprobs = report.structured = "n/a (local: full distribution)"
    thought = ChatRequest(
        policy_messages(q, "", cfg.rollout.actions),
        max_new_tokens=cfg.rollout.thought_tokens,
        prefill="Thought:",
        stop=("\nAction", "\nObservation"),
    )
    seconds, texts = [], []
    for request in (thought, answer_request(cfg, q, "")):
        start = time.perf_counter()
        (completion,) = backend.generate([request])
        seconds.append(time.perf_counter() - start)
        if completion.finish_reason == "error":
            report.problems.append(completion.extra.get("error", "generation failed"))
        texts.append(completion.text)
    report.items = len(texts)
    report.parsed = sum(bool(t.strip()) for t in texts)
    report.replies = texts
    report.latency_s = statistics.median(seconds)
    if report.parsed < report.items and not report.problems:
        report.problems.append("an empty reply")
    return report


def _preflight_key(cfg: RunConfig) -> str:
    jc = cfg.judge
    return request_key(
        jc.backend,
        jc.name,
        {"endpoint": jc.base_url, "scoring": jc.scoring, "mode": jc.mode, "v": CHECK_VERSION},
        kind="preflight",
    )


def judge_preflight(cfg: RunConfig, cache: ResponseCache | None) -> tuple[CheckReport, bool]:
    """The judge check that synthesis runs first: (report, served from the cache). A passing
    check is remembered per endpoint and model; a failing one is asked again next time."""
    stored = cache.get(_preflight_key(cfg)) if cache is not None else None
    if stored is not None:
        return CheckReport(**stored), True
    report = check_judge(cfg, cache, agreement=False)
    if report.usable and cache is not None:
        cache.put(_preflight_key(cfg), report.to_dict())
    return report, False
