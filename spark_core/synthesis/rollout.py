"""One step of the SPaRK rollout for one shard of questions: generate -> execute -> judge.

For every active question the generator writes a thought, then an input for each candidate
action (the tools, and ``cot`` whose input is its reasoning); the tools run in the sandbox;
the judge scores all candidates. Every generation and judgement goes through the response
cache, so a crashed shard resumes without paying for a finished call twice. Selection is not
here: it is a barrier over all shards (``barrier.py``). After the last step, ``final_answers``
asks every question still open for its letter.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pyarrow as pa

from spark_core.config import RunConfig
from spark_core.data.answers import LETTERS, AnswerSource, read_letter
from spark_core.models.generator import Generator
from spark_core.models.judge.judge import Judge
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.judge.scorers import EXPECTATION_METHODS, Judgement, JudgeStatus
from spark_core.models.requests import ChatRequest, Completion
from spark_core.protocol import (
    COT,
    INPUT_STOP,
    THOUGHT_STOP,
    Question,
    policy_messages,
)
from spark_core.synthesis.repair import REPAIR_FIELDS, RepairContext, repair_calls
from spark_core.tools.base import ToolStatus
from spark_core.tools.batch import TOOL_CALLS_SCHEMA, ToolCall, run_batch
from spark_core.tools.registry import discover
from spark_core.tools.sandbox import Sandbox

STAGE_VERSION = "7"  # 2: behaviour log-probs, seeded selection order, judge sees the thought
# 3: failed tool calls repaired before judging (rollout.tool_retries), repair columns
# 4: the sandbox refuses oversized calculator/unit_converter inputs, names the memory cap
# 5: viability strictly above the threshold, judge.grade (both readings stored), within-state
#    usage of the viable candidates in `selected`
# 6: judge_cached_prompt_tokens and judge_batch columns (judge.mode, judge.batch)
# 7: summary_actions' `selected`, `selected_share` columns (were `chosen`, `chosen_share`);
#    final_answers' `answer_source` column (was `source`) and its value `final_prompt` (was
#    `answer_step`): one AnswerSource with labeling and evaluation

CANDIDATES_SCHEMA = pa.schema(
    [
        *TOOL_CALLS_SCHEMA,
        pa.field("thought", pa.string(), nullable=False),
        pa.field("gen_prompt_tokens", pa.int64(), nullable=False),
        pa.field("gen_completion_tokens", pa.int64(), nullable=False),
        pa.field("gen_cached", pa.bool_(), nullable=False),
        pa.field("gen_logprobs", pa.string()),  # openai: JSON of [token, logprob] per part
        *REPAIR_FIELDS,
    ]
)
SCORES_SCHEMA = pa.schema(
    [
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("score", pa.float64()),  # null: the judgement failed; judge.grade's reading
        pa.field("score_expected", pa.float64()),  # log-prob expectation (null: not available)
        pa.field("score_integer", pa.float64()),  # the judge's stated grade (null: none read)
        pa.field("judge_status", pa.string(), nullable=False),  # JudgeStatus
        pa.field("judge_error", pa.string(), nullable=False),
        pa.field("judge_reply", pa.string(), nullable=False),  # the judge's raw reply
        pa.field("judge_method", pa.string(), nullable=False),  # JudgeMethod: how it was read
        pa.field("judge_prompt_tokens", pa.int64(), nullable=False),
        pa.field("judge_completion_tokens", pa.int64(), nullable=False),
        pa.field("judge_cached", pa.bool_(), nullable=False),
        # of judge_prompt_tokens, served by the provider's prompt cache; billed in a batch job
        pa.field("judge_cached_prompt_tokens", pa.int64(), nullable=False),
        pa.field("judge_batch", pa.bool_(), nullable=False),
    ]
)
FINAL_SCHEMA = pa.schema(
    [
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("final_answer", pa.string(), nullable=False),
        # AnswerSource: stated | final_prompt | guess (synthesis offers no answer action)
        pa.field("answer_source", pa.string(), nullable=False),
        pa.field("answer_text", pa.string(), nullable=False),
    ]
)


def check_actions(actions: list[str]) -> None:
    unknown = [a for a in actions if a != COT and a not in discover()]
    if unknown:
        raise ValueError(
            f"rollout.actions names unknown tools {unknown}; "
            f"registered: {sorted(discover())} and {COT!r}"
        )


def answer_request(cfg: RunConfig, q: Question, trajectory: str) -> ChatRequest:
    """Ask for the final letter after the last step: the answer action, prefilled."""
    prefill = "Thought: I can now give the final answer.\nAction: answer\nAction Input: ("
    return ChatRequest(
        policy_messages(q, trajectory, cfg.rollout.actions),
        max_new_tokens=3,
        temperature=0.0,
        prefill=prefill,
        stop=(")",),
    )


def final_answers(
    cfg: RunConfig, questions: dict[int, Question], states: pa.Table, generator: Generator
) -> pa.Table:
    """Every question's final answer and its ``AnswerSource``: stated during the rollout,
    asked for after the last step (final_prompt), or — MMLU-Pro's rule when no letter can be
    read — a seeded random guess. (Synthesis offers no answer action: never answer_action.)"""
    rows, pending = [], []
    for state in states.to_pylist():
        if state["final_answer"]:
            rows.append(
                {
                    "question_id": state["question_id"],
                    "final_answer": state["final_answer"],
                    "answer_source": AnswerSource.STATED,
                    "answer_text": "",
                }
            )
        else:
            pending.append(state)
    completions = generator.generate(
        [answer_request(cfg, questions[s["question_id"]], s["trajectory"]) for s in pending]
    )
    for state, completion in zip(pending, completions, strict=True):
        q = questions[state["question_id"]]
        # the model's own text after the prefilled "(", read by MMLU-Pro's cascade: no wrapping
        letter = read_letter(completion.text, len(q.options))
        source = AnswerSource.FINAL_PROMPT
        if letter is None:
            rng = random.Random(f"guess:{cfg.rollout.seed}:{q.question_id}")
            letter, source = LETTERS[rng.randrange(len(q.options))], AnswerSource.GUESS
        rows.append(
            {
                "question_id": q.question_id,
                "final_answer": letter,
                "answer_source": source,
                "answer_text": completion.text,
            }
        )
    rows.sort(key=lambda r: r["question_id"])
    return pa.Table.from_pylist(rows, schema=FINAL_SCHEMA)


def _request(
    cfg: RunConfig, messages: tuple, prefill: str, max_tokens: int, stop: tuple, salt: int
) -> ChatRequest:
    gen = cfg.generator
    return ChatRequest(
        messages,
        max_new_tokens=max_tokens,
        temperature=gen.temperature,
        seed=cfg.rollout.seed * 1_000_003 + salt,
        stop=stop,
        prefill=prefill,
        logprobs=gen.backend == "openai",  # behaviour log-probs (hf scores them at selection)
    )


def _generated_logprobs(thought: Completion | None, tool_input: Completion) -> str | None:
    """The server's per-token log-probs of a candidate's thought and input, as JSON. A thought
    written with its action fixed in the prompt (``rollout.thoughts: per_action``) was not
    written in the state: its log-probs are dropped (training rescored them there)."""
    parts = {
        "thought": None if thought is None else thought.extra.get("logprobs"),
        "input": tool_input.extra.get("logprobs"),
    }
    return json.dumps(parts) if any(parts.values()) else None


def _repair(
    cfg: RunConfig,
    step: int,
    prompts: dict[int, tuple],
    thought_of: dict[tuple[int, str], str],
    pairs: list[tuple[Question, str]],
    inputs: list[Completion],
    rows: list[dict[str, Any]],
    generator: Generator,
    sandbox: Sandbox,
) -> None:
    """Repair the failed tool calls among ``rows`` before they are judged (a candidate whose
    generation failed is not repaired). A repaired input was written in the repair prompt,
    not the state: its server log-probs are dropped (training uses the reference there)."""
    contexts = [
        None
        if completion.finish_reason == "error"
        else RepairContext(
            prompts[q.question_id],
            thought_of[q.question_id, a],
            cfg.generator.temperature,
            cfg.rollout.seed * 1_000_003 + q.question_id * 31 + step,
        )
        for (q, a), completion in zip(pairs, inputs, strict=True)
    ]
    tokens = repair_calls(rows, contexts, generator, sandbox, cfg)
    for row, (prompt, completion) in zip(rows, tokens, strict=True):
        row["gen_prompt_tokens"] += prompt  # a candidate's generation includes its repairs
        row["gen_completion_tokens"] += completion
        if row["repair_attempts"] and row["gen_logprobs"]:
            row["gen_logprobs"] = json.dumps({**json.loads(row["gen_logprobs"]), "input": None})


def action_fixed(messages: tuple, action: str) -> tuple:
    """The policy's prompt with the step's action fixed (``rollout.thoughts: per_action``), so
    the thought is written for that action."""
    role, text = messages[-1]
    return (*messages[:-1], (role, f"{text}\nThis step's action is {action}."))


def judge_readings(j: Judgement, grade: str) -> dict[str, float | None]:
    """``score`` (what selection and rewards use, by ``judge.grade``) and both readings: the
    expectation exists where the judge gave log-probs, the stated grade wherever one was read."""
    expected = j.score if j.method in EXPECTATION_METHODS else None
    integer = j.grade if j.status == JudgeStatus.OK else None
    score = j.score if grade == "expected" or j.status != JudgeStatus.OK else integer
    return {"score": score, "score_expected": expected, "score_integer": integer}


def rollout_step(
    cfg: RunConfig,
    step: int,
    questions: list[Question],
    trajectories: dict[int, str],
    generator: Generator,
    judge: Judge,
    sandbox: Sandbox,
    timings: dict[str, float] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Candidates and their judge scores for ``questions`` (all active) at ``step``.
    ``timings`` (if given) accumulates seconds spent generating, running tools and judging."""
    timings = {} if timings is None else timings
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[phase] = timings.get(phase, 0.0) + now - clock
        clock = now

    actions = cfg.rollout.actions
    prompts = {
        q.question_id: policy_messages(q, trajectories[q.question_id], actions) for q in questions
    }
    pairs = [(q, a) for q in questions for a in actions]
    per_action = cfg.rollout.thoughts == "per_action"
    # shared: one thought per question; per_action: one per candidate, its action in the prompt
    thinkers = pairs if per_action else [(q, "") for q in questions]
    thought_completion: dict[tuple[int, str], Completion] = {}
    thought_of: dict[tuple[int, str], str] = {}

    def input_requests(thoughts: list[Completion]) -> list[ChatRequest]:
        by_thinker = {(q.question_id, a): t for (q, a), t in zip(thinkers, thoughts, strict=True)}
        for q, a in pairs:
            own = by_thinker[q.question_id, a if per_action else ""]
            thought_completion[q.question_id, a] = own
            thought_of[q.question_id, a] = own.text.strip()
        return [
            _request(
                cfg,
                prompts[q.question_id],
                f"Thought: {thought_of[q.question_id, a]}\nAction: {a}\nAction Input:",
                cfg.rollout.input_tokens,
                INPUT_STOP,
                q.question_id * 31 + step,
            )
            for q, a in pairs
        ]

    # shared thoughts: the inputs continue the thoughts' KV sessions on a local model, so no
    # state is read twice (a per_action thought's prompt differs from its input's: no reuse)
    thoughts, inputs = generator.thoughts_and_inputs(
        [
            _request(
                cfg,
                action_fixed(prompts[q.question_id], a) if a else prompts[q.question_id],
                "Thought:",
                cfg.rollout.thought_tokens,
                THOUGHT_STOP,
                q.question_id * 31 + step,
            )
            for q, a in thinkers
        ],
        input_requests,
    )
    calls = [
        ToolCall(q.question_id, step, a, c.text.strip())
        for (q, a), c in zip(pairs, inputs, strict=True)
    ]
    lap("generation")
    rows = run_batch(calls, sandbox, cfg.tools.parallelism)
    lap("tools")
    for row, (q, a), completion in zip(rows, pairs, inputs, strict=True):
        thought = thought_completion[q.question_id, a]
        row.update(
            thought=thought_of[q.question_id, a],
            gen_prompt_tokens=completion.prompt_tokens,
            gen_completion_tokens=completion.completion_tokens,
            gen_cached=completion.cached,
            gen_logprobs=_generated_logprobs(None if per_action else thought, completion),
        )
        if completion.finish_reason == "error":
            row.update(
                status=ToolStatus.ERROR,
                output="",
                error=f"generation failed: {completion.extra.get('error', '')}"[:500],
            )

    if cfg.rollout.tool_retries:
        _repair(cfg, step, prompts, thought_of, pairs, inputs, rows, generator, sandbox)
        lap("repairs")
    items = [
        JudgeItem(
            q.question,
            q.options,
            trajectories[q.question_id],
            row["action"],
            row["tool_input"],
            row["output"] if row["status"] == ToolStatus.OK else f"{row['status']}: {row['error']}",
            thought_of[q.question_id, a],
        )
        for row, (q, a) in zip(rows, pairs, strict=True)
    ]
    judgements = judge.score(items)
    lap("judging")
    scores = [
        {
            "question_id": row["question_id"],
            "step": step,
            "action": row["action"],
            **judge_readings(j, cfg.judge.grade),
            "judge_status": j.status,
            "judge_error": j.error,
            "judge_reply": j.raw,
            "judge_method": j.method,
            "judge_prompt_tokens": j.prompt_tokens,
            "judge_completion_tokens": j.completion_tokens,
            "judge_cached": j.cached,
            "judge_cached_prompt_tokens": j.cached_prompt_tokens,
            "judge_batch": j.batch,
        }
        for row, j in zip(rows, judgements, strict=True)
    ]
    return (
        pa.Table.from_pylist(rows, schema=CANDIDATES_SCHEMA),
        pa.Table.from_pylist(scores, schema=SCORES_SCHEMA),
    )
