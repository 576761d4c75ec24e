"""The judge's prompt: the one place its wording lives."""

from __future__ import annotations

from dataclasses import dataclass

from spark_core.data.answers import LETTERS

SYSTEM = (
    "You grade one step of a solution to a multiple-choice question. The step used an action "
    "(a tool, or plain reasoning) and got an observation. Rate how much this step helps answer "
    "the question correctly: 0 = useless, wrong or misleading; 5 = somewhat relevant; "
    "10 = correct and decisive. Reply with a single integer from 0 to 10."
)


@dataclass(frozen=True)
class JudgeItem:
    """Everything the judge sees about one candidate action."""

    question: str
    options: tuple[str, ...]
    trajectory: str
    action: str
    tool_input: str
    tool_output: str
    thought: str = ""  # the step's thought, shared by the step's candidates

    @property
    def shared_part(self) -> tuple[str, tuple[str, ...], str, str]:
        """What the candidates of one step have in common (their prompts share this prefix)."""
        return (self.question, self.options, self.trajectory, self.thought)


def user_message(item: JudgeItem) -> str:
    options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(item.options))
    trajectory = item.trajectory.strip() or "(no steps yet)"
    # the candidate goes last, so the candidates of a step share every token before it
    return (
        f"Question:\n{item.question}\n\nOptions:\n{options}\n\n"
        f"Steps so far:\n{trajectory}\n\n"
        f"Candidate step:\nThought: {item.thought.strip() or '(none)'}\n"
        f"Action: {item.action}\nAction Input: {item.tool_input.strip()}\n"
        f"Observation: {item.tool_output.strip() or '(empty)'}\n\n"
        "Score (0-10):"
    )


def judge_messages(item: JudgeItem) -> tuple[tuple[str, str], ...]:
    return (("system", SYSTEM), ("user", user_message(item)))


SCORE_PREFILL = "Score: "
"""The local judge's assistant turn starts here, so the next token is the score."""
