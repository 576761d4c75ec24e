"""The policy alone picks every step — no judge — with the same action protocol, tools and
sandbox as synthesis, for up to ``evaluation.steps`` steps.

- ``evaluation.action_decoding: constrained`` (default): the thought and the action input are free
  text, the action is chosen among the action names by scoring them
  (``models/constrained_actions``), and P(action | state) is stored for every step. ``free``: the
  model writes the whole step; a missing or unknown action is ``invalid`` (never a made-up ``cot``),
  and the state keeps the model's own text.
- Letters come only from the model's own text, through MMLU-Pro's cascade. A question with
  no readable answer gets a guess that depends only on (evaluation.seed, question), so every
  policy guesses the same letter for the same question.
- Policies ``base@0.7``, ``base@1``, ... are the base model sampled at each of
  ``evaluation.temperatures``; the others decode greedily (``policies.py``). A sampled policy
  stores the tempered distribution its action was drawn from, p^(1/T) renormalised; a greedy
  one the model's own distribution.
- ``rollout.tool_retries``: a step whose tool call fails is repaired by the policy itself
  (``repair.py``) before its observation enters the state.
"""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa

from spark_core.config import RunConfig
from spark_core.data.answers import LETTERS, AnswerSource, read_letter
from spark_core.evaluation.policies import evaluated_policy
from spark_core.models.constrained_actions.scoring import action_names, tempered
from spark_core.models.generator import Generator
from spark_core.models.requests import ChatRequest, PolicyStep, StepRequest
from spark_core.progress import publish
from spark_core.protocol import (
    ANSWER,
    COT,
    INVALID,
    Question,
    final_answer,
    parse_step,
    policy_messages,
    render_step,
    trajectory_entry,
)
from spark_core.synthesis.barrier import observation_text
from spark_core.synthesis.repair import RepairContext, repair_calls
from spark_core.synthesis.rollout import answer_request
from spark_core.tools.base import ToolStatus
from spark_core.tools.batch import ToolCall, run_batch
from spark_core.tools.sandbox import Sandbox

STAGE_VERSION = "5"  # 5: tempered distributions stored, the seed column, one base@T per T
# 3: failed tool calls repaired at the step (rollout.tool_retries)
# 4: the sandbox refuses oversized calculator/unit_converter inputs, names the memory cap
# (PPO's policy once named "spark" writes rows_ppo, a new artifact name: nothing to bump)
EVAL_ROWS_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("final_answer", pa.string(), nullable=False),
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("no_answer", pa.bool_(), nullable=False),
        pa.field("answer_source", pa.string(), nullable=False),  # AnswerSource
        pa.field("steps", pa.int32(), nullable=False),
        pa.field("actions", pa.list_(pa.string()), nullable=False),
        # P(action | state) per step, in the order of action_names; [] where not available
        pa.field("action_names", pa.list_(pa.string()), nullable=False),
        pa.field("step_probs", pa.list_(pa.list_(pa.float64())), nullable=False),
        pa.field("invalid_actions", pa.int32(), nullable=False),
        pa.field("tool_calls", pa.int32(), nullable=False),
        pa.field("tool_errors", pa.int32(), nullable=False),  # calls still failing after repair
        # rollout.tool_retries: steps whose failed call was repaired (tried, fixed), and per step
        # (aligned with ``actions``) the repair generations run and whether the call was fixed
        pa.field("repairs_attempted", pa.int32(), nullable=False),
        pa.field("repairs_succeeded", pa.int32(), nullable=False),
        pa.field("step_repairs", pa.list_(pa.int32()), nullable=False),
        pa.field("step_repaired", pa.list_(pa.bool_()), nullable=False),
        pa.field("parse_problems", pa.int32(), nullable=False),
        pa.field("decoding", pa.string(), nullable=False),
        pa.field("temperature", pa.float64(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),  # the adapter's training seed; -1: none
        pa.field("transcript", pa.string(), nullable=False),
    ]
)


def guess_letter(seed: int, question_id: int, n_options: int) -> str:
    """MMLU-Pro's random guess for a question with no readable answer; the same for every
    policy, so paired tests compare policies rather than random draws."""
    return LETTERS[random.Random(f"guess:{seed}:{question_id}").randrange(n_options)]


def _free_steps(
    cfg: RunConfig, generator: Generator, prompts: list[tuple], temperature: float, seed: int
) -> list[tuple[PolicyStep, str, int]]:
    """The model writes the whole step; (step, its own text, parse problems)."""
    completions = generator.generate(
        [
            ChatRequest(
                messages,
                max_new_tokens=cfg.rollout.thought_tokens + cfg.rollout.input_tokens,
                temperature=temperature,
                seed=seed,
                prefill="Thought:",
                stop=("\nObservation",),
            )
            for messages in prompts
        ]
    )
    out = []
    for completion in completions:
        text = "Thought:" + completion.text
        parsed = parse_step(text, cfg.rollout.actions, strict=True)
        step = PolicyStep(parsed.thought, parsed.action, parsed.action_input)
        out.append((step, text.strip(), len(parsed.problems)))
    return out


def evaluate_policy(
    cfg: RunConfig, policy: str, questions: list[Question], generator: Generator, sandbox: Sandbox
) -> pa.Table:
    """Roll the policy out on every question; one row per question. ``policy`` names one
    of ``evaluated_policies`` (its temperature, seed and report name come from there)."""
    actions, names = cfg.rollout.actions, action_names(cfg.rollout.actions)
    target = evaluated_policy(cfg, policy)
    decoding, temperature = cfg.evaluation.action_decoding, target.temperature
    state: dict[int, dict[str, Any]] = {
        q.question_id: {
            "trajectory": "",
            "actions": [],
            "probs": [],
            "answer": None,
            "source": AnswerSource.GUESS,
            "done": False,
            "tool_calls": 0,
            "tool_errors": 0,
            "repairs": [],
            "repaired": [],
            "invalid": 0,
            "problems": 0,
            "steps": 0,
        }
        for q in questions
    }
    by_id = {q.question_id: q for q in questions}
    what = f"evaluate {policy} (steps)"
    for step in range(1, cfg.evaluation.steps + 1):
        publish(what, step - 1, cfg.evaluation.steps + 1)
        active = [q for q in questions if not state[q.question_id]["done"]]
        if not active:
            break
        prompts = [policy_messages(q, state[q.question_id]["trajectory"], actions) for q in active]
        seed = cfg.evaluation.seed * 1_000_003 + step
        if decoding == "constrained":
            results = generator.policy_steps(
                [
                    StepRequest(
                        messages,
                        tuple(names),
                        cfg.rollout.thought_tokens,
                        cfg.rollout.input_tokens,
                        temperature,
                        seed=seed,
                    )
                    for messages in prompts
                ]
            )
            written = [(r, "", 0) for r in results]
        else:
            written = _free_steps(cfg, generator, prompts, temperature, seed)
        steps, calls = {}, []
        for q, (result, own_text, problems) in zip(active, written, strict=True):
            s = state[q.question_id]
            s["steps"] = step
            s["problems"] += problems
            s["actions"].append(result.action)
            s["repairs"].append(0)
            s["repaired"].append(False)
            probs = [result.distribution.get(n, 0.0) for n in names]
            s["probs"].append(tempered(probs, temperature) if result.distribution else [])
            steps[q.question_id] = (result, own_text)
            if result.action == ANSWER:
                s["done"] = True
                s["answer"] = read_letter(result.action_input, len(q.options))
                s["source"] = AnswerSource.ANSWER_ACTION
            elif result.action == INVALID:
                s["invalid"] += 1
            elif result.action != COT:
                calls.append(ToolCall(q.question_id, step, result.action, result.action_input))
        done_calls = run_batch(calls, sandbox, cfg.tools.parallelism)
        if cfg.rollout.tool_retries:
            prompt_of = {q.question_id: m for q, m in zip(active, prompts, strict=True)}
            contexts: list[RepairContext | None] = [
                RepairContext(
                    prompt_of[c.question_id],
                    steps[c.question_id][0].thought,
                    temperature,
                    seed + 31 * c.question_id,
                )
                for c in calls
            ]
            repair_calls(done_calls, contexts, generator, sandbox, cfg)
        results_by_id = {r["question_id"]: r for r in done_calls}
        for qid, (result, own_text) in steps.items():
            s = state[qid]
            if result.action == ANSWER:
                continue
            if result.action == INVALID:  # the model's own text, never an invented action
                entry, said = own_text, own_text
            else:
                if qid in results_by_id:
                    row = results_by_id[qid]
                    s["tool_calls"] += 1
                    s["tool_errors"] += row["status"] != ToolStatus.OK
                    if row.get("repair_attempts"):
                        s["repairs"][-1] = row["repair_attempts"]
                        s["repaired"][-1] = row["repair_succeeded"]
                    result.action_input = row["tool_input"]  # the input that ran last
                else:  # cot: the reasoning is the observation
                    row = {"action": COT, "status": ToolStatus.OK, "output": result.action_input}
                    row["error"] = ""
                observation = observation_text(row, cfg.rollout.observation_chars)
                step_text = render_step(result.thought, result.action, result.action_input)
                entry = trajectory_entry(step_text, observation)
                said = f"{result.thought}\n{result.action_input}"
            s["trajectory"] = f"{s['trajectory']}\n{entry}" if s["trajectory"] else entry
            stated = final_answer(said)  # "the answer is (X)" written by the model itself
            if stated is not None and LETTERS.index(stated) < len(by_id[qid].options):
                s.update(answer=stated, source=AnswerSource.STATED, done=True)
    publish(what, cfg.evaluation.steps, cfg.evaluation.steps + 1)
    pending = [q for q in questions if state[q.question_id]["answer"] is None]
    finals = generator.generate(
        [answer_request(cfg, q, state[q.question_id]["trajectory"]) for q in pending]
    )
    for q, completion in zip(pending, finals, strict=True):
        letter = read_letter(completion.text, len(q.options))  # the model's text after "("
        if letter is not None:
            state[q.question_id].update(answer=letter, source=AnswerSource.FINAL_PROMPT)
    publish(what, cfg.evaluation.steps + 1, cfg.evaluation.steps + 1)
    rows = []
    for q in questions:
        s = state[q.question_id]
        letter, no_answer = s["answer"], s["answer"] is None
        if no_answer:
            letter = guess_letter(cfg.evaluation.seed, q.question_id, len(q.options))
            s["source"] = AnswerSource.GUESS
        rows.append(
            {
                "policy": target.policy,
                "question_id": q.question_id,
                "category": q.category,
                "answer": q.answer,
                "final_answer": letter,
                "correct": letter == q.answer,
                "no_answer": no_answer,
                "answer_source": s["source"],
                "steps": s["steps"],
                "actions": s["actions"],
                "action_names": names,
                "step_probs": s["probs"],
                "invalid_actions": s["invalid"],
                "tool_calls": s["tool_calls"],
                "tool_errors": s["tool_errors"],
                "repairs_attempted": sum(n > 0 for n in s["repairs"]),
                "repairs_succeeded": sum(s["repaired"]),
                "step_repairs": s["repairs"],
                "step_repaired": s["repaired"],
                "parse_problems": s["problems"],
                "decoding": decoding,
                "temperature": temperature,
                "seed": target.seed,
                "transcript": s["trajectory"],
            }
        )
    return pa.Table.from_pylist(rows, schema=EVAL_ROWS_SCHEMA)
