"""Do ``per_candidate`` and ``per_state`` judging agree? The same candidates scored both ways:
the rank agreement of their scores (Spearman) and the share of candidates whose viability
(score > ``rollout.viable_threshold``, as selection reads it) differs between the two.

``per_state`` is several times cheaper (one call per state instead of one per candidate), but
a judge that sees the candidates side by side may grade them differently; a run should switch
only where this check says the two agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import spearmanr

from spark_core.models.judge.per_state import state_scorer
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.judge.scorers import HFJudge, Judgement, OpenAIJudge


@dataclass
class Agreement:
    candidates: int  # scored in both modes
    spearman: float | None  # None: fewer than 2 candidates, or a mode gave one score to all
    viability_differs: int  # candidates viable in one mode and not in the other
    threshold: float
    failed: int = 0  # candidates a mode could not score (left out of the figures)

    @property
    def differs_share(self) -> float:
        return self.viability_differs / self.candidates if self.candidates else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """For `spark check judge` (short lines: the console may be 80 wide)."""
        rho = "n/a" if self.spearman is None else f"{self.spearman:.3f}"
        unscored = f", {self.failed} unscored" if self.failed else ""
        return [
            f"per_state vs per_candidate: Spearman {rho} over {self.candidates}{unscored}",
            f"viability differs:  {self.viability_differs}/{self.candidates} "
            f"({self.differs_share:.0%}) at > {self.threshold:g}",
        ]


def agreement(
    per_candidate: list[float | None], per_state: list[float | None], threshold: float
) -> Agreement:
    pairs = [
        (a, b)
        for a, b in zip(per_candidate, per_state, strict=True)
        if a is not None and b is not None
    ]
    failed = len(per_candidate) - len(pairs)
    rho = None
    if len(pairs) >= 2 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
        rho = round(float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic), 4)
    # viable as selection.is_viable reads it: strictly above the threshold (the paper's "above")
    differs = sum((a > threshold) != (b > threshold) for a, b in pairs)
    return Agreement(len(pairs), rho, differs, threshold, failed)


def score_plainly(scorer: HFJudge | OpenAIJudge, items: list[JudgeItem]) -> list[Judgement]:
    """``items`` scored per candidate, straight from the model (never the response cache)."""
    if isinstance(scorer, OpenAIJudge):
        return [scorer.score_one(i) for i in items]
    return scorer.score(items)


def measure(scorer: HFJudge | OpenAIJudge, items: list[JudgeItem], threshold: float) -> Agreement:
    """``items`` scored in both modes by the same judge, and how far the two agree."""
    one = [j.score for j in score_plainly(scorer, items)]
    return agreement(one, [j.score for j in state_scorer(scorer).score(items)], threshold)
