"""per_candidate vs per_state: the agreement figures on hand-made scores, and `spark check
judge` measuring them on a loopback server and on a local judge."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from flows.cli import app
from spark_core.models.hf.backend import HFBackend
from spark_core.models.judge.agreement import agreement, measure
from spark_core.models.judge.scorers import HFJudge
from spark_core.preflight import CALIBRATION, STATE_THOUGHT
from tests.helpers import GOOD, cli_cfg, rubric

runner = CliRunner()


def state_rubric(good: int, bad: int):
    """A judge that knows the calibration answers in both modes; per state it gives ``good``
    to the good candidates and ``bad`` to the others."""

    def reply(messages: list[dict]) -> str:
        text = messages[-1]["content"]
        if "Candidate steps:" not in text:
            return rubric(messages)
        blocks = re.findall(r"^(\d+)\. (Action: \w+)", text, re.M)
        return json.dumps({n: good if a in GOOD else bad for n, a in blocks})

    return reply


@pytest.fixture
def server(loopback_openai):
    loopback_openai.reset()
    return loopback_openai


def test_agreement_on_hand_made_scores():
    a = agreement([9, 2, 8, 1], [8, 3, 9, 0], threshold=6)
    # ranks (4, 2, 3, 1) vs (3, 2, 4, 1): rho = 1 - 6 * 2 / (4 * 15)
    assert (a.candidates, a.spearman, a.viability_differs, a.failed) == (4, 0.8, 0, 0)
    b = agreement([9, 2, 6, None], [5, 3, 6, 7], threshold=6)
    assert (b.candidates, b.viability_differs, b.failed) == (3, 1, 1)
    assert b.lines() == [
        "per_state vs per_candidate: Spearman 0.500 over 3, 1 unscored",
        "viability differs:  1/3 (33%) at > 6",
    ]
    assert agreement([5, 5], [1, 2], 6).spearman is None  # one mode gave one score to all


@pytest.mark.parametrize(
    "good, bad, expected",
    [
        (9, 2, ("Spearman 1.000 over 6", "differs:  0/6 (0%) at > 4")),
        (2, 9, ("Spearman -1.000 over 6", "differs:  6/6 (100%) at > 4")),
    ],
)
def test_spark_check_judge_prints_the_agreement_of_the_two_modes(
    server, tmp_path, capsys, good, bad, expected
):
    server.state.reply_fn = state_rubric(good, bad)
    # the agreement only: the calibrated time estimate is test_judge_check's
    args = ["check", "judge", "--no-calibration", *cli_cfg(tmp_path, server, "judge.scoring=text")]
    result = runner.invoke(app, args, terminal_width=200)
    with capsys.disabled():
        print(f"\n$ spark check judge (loopback, text, per_state {good}/{bad})\n" + result.output)
    assert result.exit_code == 0, result.output
    assert f"per_state vs per_candidate: {expected[0]}\n" in result.output
    assert f"viability {expected[1]}\n" in result.output
    states = [b for b in server.state.log if "Candidate steps:" in b[-1]["content"]]
    assert len(states) == len(CALIBRATION)  # one call per calibration state


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, device="cpu", batch_size=4)


def test_agreement_on_the_local_judge_scores_every_candidate_both_ways(backend):
    items = [replace(i, thought=STATE_THOUGHT) for pair in CALIBRATION for i in pair]
    found = measure(HFJudge(backend), items, threshold=6.0)
    assert (found.candidates, found.failed) == (6, 0)
    assert found.spearman is None or -1.0 <= found.spearman <= 1.0
