"""The action text protocol: the action names, the stop strings, one renderer and one parser,
the policy's prompt and the question it is about — used by synthesis, training, evaluation and
the models alike (a leaf: it imports only the data and the tool registry).

A step is ReAct-style text::

    Thought: 2 hours is 6 doublings of 20 minutes.
    Action: calculator
    Action Input: 500 * 2**6

and the environment answers with ``Observation: 32000``. The action is a tool name, ``cot``
(reasoning only; the input is the reasoning) or ``answer`` (the input is the final letter).
The parser tolerates small-model sloppiness (case, markdown, missing labels, aliases) and
reports what it could not parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from spark_core.data.prompts import question_block
from spark_core.tools.registry import discover

ANSWER = "answer"
COT = "cot"
INVALID = "invalid"  # a free-text step whose action is missing or unknown (evaluation)
ALIASES = {
    "calc": "calculator",
    "calculate": "calculator",
    "math": "calculator",
    "python_exec": "python",
    "code": "python",
    "py": "python",
    "sympy": "symbolic_math",
    "symbolic": "symbolic_math",
    "algebra": "symbolic_math",
    "units": "unit_converter",
    "unit_conversion": "unit_converter",
    "convert": "unit_converter",
    "chem": "chemistry",
    "stats": "statistics",
    "probability": "statistics",
    "financial": "finance",
    "search": "knowledge_search",
    "lookup": "knowledge_search",
    "retrieve": "knowledge_search",
    "knowledge": "knowledge_search",
    "chain_of_thought": "cot",
    "reason": "cot",
    "reasoning": "cot",
    "think": "cot",
    "none": "cot",
    "final_answer": "answer",
    "finish": "answer",
    "final": "answer",
}
_LABEL = r"[\*\_#\s]*"
_THOUGHT = re.compile(rf"^{_LABEL}thought{_LABEL}:[\*_]*", re.IGNORECASE | re.MULTILINE)
_ACTION = re.compile(rf"^{_LABEL}action{_LABEL}:{_LABEL}(.*)$", re.IGNORECASE | re.MULTILINE)
_INPUT = re.compile(
    rf"^{_LABEL}(?:action[\s_]*)?input{_LABEL}:[\*_]*", re.IGNORECASE | re.MULTILINE
)
_OBSERVATION = re.compile(rf"^{_LABEL}observation{_LABEL}:", re.IGNORECASE | re.MULTILINE)
_FINAL = re.compile(r"answer is \(?([A-J])\)?")
THOUGHT_STOP = ("\nAction", "\nObservation", "\nThought")
INPUT_STOP = ("\nObservation", "\nThought", "\nAction")


@dataclass(frozen=True)
class Question:
    question_id: int
    question: str
    options: tuple[str, ...]
    category: str
    answer: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Question:
        return cls(
            row["question_id"],
            row["question"],
            tuple(row["options"]),
            row["category"],
            row["answer"],
        )


@dataclass
class Step:
    thought: str
    action: str
    action_input: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def render_step(thought: str, action: str, action_input: str) -> str:
    """The policy's completion for one step."""
    return f"Thought: {thought.strip()}\nAction: {action}\nAction Input: {action_input.strip()}"


def render_observation(observation: str) -> str:
    return f"Observation: {observation.strip()}"


def canonical_action(name: str, actions: list[str] | tuple[str, ...]) -> str | None:
    cleaned = re.sub(r"[^a-z0-9_ ]", "", name.strip().lower()).strip().replace(" ", "_")
    cleaned = ALIASES.get(cleaned, cleaned)
    if cleaned in actions or cleaned == ANSWER:
        return cleaned
    for action in actions:  # "calculator tool", "use python"
        if action in cleaned.split("_") or cleaned.startswith(action):
            return action
    return None


def parse_step(text: str, actions: list[str] | tuple[str, ...], strict: bool = False) -> Step:
    """Read a step written by a model; problems lists what had to be guessed or is missing.
    ``strict``: a missing or unknown action is ``INVALID`` instead of a guess (``cot``, or
    ``answer`` when the text states one) — evaluation must not invent choices."""
    problems: list[str] = []
    text = text.strip()
    cut = _OBSERVATION.search(text)  # a model may hallucinate the observation
    if cut:
        text = text[: cut.start()].rstrip()
    action_match = _ACTION.search(text)
    input_match = _INPUT.search(text)
    thought_end = (
        min(m.start() for m in (action_match, input_match) if m)
        if (action_match or input_match)
        else len(text)
    )
    thought_text = text[:thought_end]
    thought_match = _THOUGHT.search(thought_text)
    thought = thought_text[thought_match.end() :] if thought_match else thought_text
    if not thought_match:
        problems.append("no 'Thought:' label")
    action = None
    if action_match:
        raw = action_match.group(1)
        action = canonical_action(raw, actions)
        if action is None:
            problems.append(f"unknown action {raw.strip()[:40]!r}")
    else:
        problems.append("no 'Action:' line")
    action_input = text[input_match.end() :] if input_match else ""
    if input_match is None and action not in (COT, None):
        problems.append("no 'Action Input:' line")
    if action is None and strict:
        return Step(thought.strip(), INVALID, action_input.strip(), problems)
    if action is None:
        final = _FINAL.search(text)
        action = ANSWER if final else COT
        if final:
            action_input = f"({final.group(1)})"
        elif not action_input:
            action_input = thought
    return Step(thought.strip(), action, action_input.strip(), problems)


def cut_at(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one occurred."""
    ends = [text.index(s) for s in stops if s in text]
    return (text[: min(ends)], True) if ends else (text, False)


def final_answer(text: str) -> str | None:
    """A final answer stated in a step ('the answer is (C)'), or None — only the explicit
    first stage of MMLU-Pro's cascade counts here, so a stray letter does not end a rollout."""
    match = _FINAL.search(text)
    return match.group(1) if match else None


# --- prompts ---------------------------------------------------------------------------------


def tool_lines(actions: list[str]) -> list[str]:
    tools = discover()
    return [f"{a}: {tools[a].description}" for a in actions if a != COT]


def system_prompt(tool_lines: list[str]) -> str:
    """The policy's instructions: the protocol and every action available."""
    listed = "\n".join(f"- {line}" for line in tool_lines)
    return (
        "Solve the multiple-choice question step by step. Each step is a Thought, then one "
        "Action and its Action Input, in this format:\n"
        "Thought: <reasoning>\nAction: <action name>\nAction Input: <input>\n"
        f"Actions:\n{listed}\n"
        f"- {COT}: reason without a tool. Input: your reasoning.\n"
        f"- {ANSWER}: give the final answer. Input: the letter, e.g. (C)."
    )


def state_message(question: str, options: list[str] | tuple[str, ...], trajectory: str) -> str:
    """The user turn: the question and the steps so far (the policy's state)."""
    steps = trajectory.strip() or "(none yet)"
    return f"{question_block(question, options)}\n\nSteps so far:\n{steps}\n\nWrite the next step."


def trajectory_entry(step_text: str, observation: str) -> str:
    return f"{step_text}\n{render_observation(observation)}"


def policy_messages(q: Question, trajectory: str, actions: list[str]) -> tuple:
    """The policy's prompt (state): shared by synthesis, training and evaluation."""
    return (
        ("system", system_prompt(tool_lines(actions))),
        ("user", state_message(q.question, q.options, trajectory)),
    )
