"""What each stage hands the next: frozen dataclasses of artifact references.

Flows pass and return these instead of bare dicts. Prefect validates them as flow parameters
and shows their fields in the UI (a dataclass is serialised field by field, as the dicts
were); task results are persisted with Prefect's pickle serializer. They live beside the tasks
that build them, not in spark_core: spark_core works on tables and never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

from spark_core.artifacts import ArtifactRef, canonical_hash


@dataclass(frozen=True)
class Questions:
    """ingest: the validated, sampled, split questions and the rejected rows (with reasons)."""

    questions: ArtifactRef
    rejected: ArtifactRef


@dataclass(frozen=True)
class SynthesisPlan:
    """The synthesis key, its questions, and the question ids of each parallel shard."""

    key: str
    questions: ArtifactRef
    shards: tuple[tuple[int, ...], ...]

    @property
    def prefix(self) -> str:
        return f"synthesize/{self.key[:16]}"


@dataclass(frozen=True)
class Shard:
    """One shard's rollout at one step: its candidates and their judge scores."""

    candidates: ArtifactRef
    scores: ArtifactRef


@dataclass(frozen=True)
class Selection:
    """One step's barrier: the selected actions, the usage counts so far, the next state."""

    selected: ArtifactRef
    usage: ArtifactRef
    state: ArtifactRef


@dataclass(frozen=True)
class SynthesisSummary:
    """Per-action usage and judge scores, and the run's totals (one row)."""

    actions: ArtifactRef
    run: ArtifactRef


@dataclass(frozen=True)
class Synthesis:
    """synthesize: the selected actions of every step, every shard's candidates and scores,
    the final answers and the summary."""

    plan: SynthesisPlan
    selected: tuple[ArtifactRef, ...]
    shards: tuple[Shard, ...]
    final_answers: ArtifactRef
    summary: SynthesisSummary


@dataclass(frozen=True)
class Labels:
    """label: every candidate with its reward components, and the selected trajectories."""

    candidate_pool: ArtifactRef
    trajectories: ArtifactRef


@dataclass(frozen=True)
class Adapter:
    """One trained PEFT adapter (a folder URI under the artifact root) and its metrics."""

    adapter: str
    metrics: ArtifactRef


@dataclass(frozen=True)
class Adapters:
    """train: one adapter per trainer (``spark_core.training.registry.TRAINERS``)."""

    trained: dict[str, Adapter]

    def uris(self) -> dict[str, str]:
        return {name: a.adapter for name, a in self.trained.items()}


@dataclass(frozen=True)
class Report:
    """evaluate: the summary tables and the report files (Markdown, HTML, plots)."""

    summary: ArtifactRef
    usage: ArtifactRef
    pairs: ArtifactRef
    entropy_tests: ArtifactRef
    productivity: ArtifactRef  # tool productivity per policy x category
    tool_map: ArtifactRef  # action counts per policy x category
    category_entropy: ArtifactRef  # entropy of each category's action distribution
    report: str
    html: str
    images: tuple[str, ...]  # accuracy, entropy and usage plots
    tool_maps: tuple[str, ...]  # one category x action heat map per policy
    repairs: ArtifactRef | None = None  # repairs per policy x tool (rollout.tool_retries > 0)
    model_calls: tuple[ArtifactRef, ...] = ()  # each evaluated policy's model calls
    claims: ArtifactRef | None = None  # the paper's claims with verdicts (claims.py)
    common_entropy: ArtifactRef | None = None  # per policy; None without common states
    accuracy_entropy: str = ""  # the accuracy against entropy chart (PNG)


@dataclass(frozen=True)
class PipelineResult:
    """pipeline: every stage's result, named by stage."""

    ingest: Questions
    synthesize: Synthesis
    label: Labels
    train: Adapters
    evaluate: Report


def _shape() -> str:
    """A fingerprint of every result type's fields. Prefect's task cache keys carry it, so a
    record persisted by an older version of these types (a plain dict, other fields) is
    never served to code that expects the current ones: upgrading recomputes those task
    results from the artifacts, which stay where they are."""
    from dataclasses import fields, is_dataclass

    types = [v for v in globals().values() if isinstance(v, type) and is_dataclass(v)]
    shape = sorted((t.__name__, [(f.name, str(f.type)) for f in fields(t)]) for t in types)
    return canonical_hash(shape)[:8]


RESULTS_SHAPE = _shape()
