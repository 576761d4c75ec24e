"""How a multiple-choice question is shown to a model (shared by every stage)."""

from __future__ import annotations

from spark_core.data.answers import LETTERS

ANSWER_INSTRUCTION = (
    'Think step by step, then finish with "The answer is (X)" where X is the letter of the '
    "correct option."
)


def question_block(question: str, options: list[str] | tuple[str, ...]) -> str:
    lines = [f"Question: {question.strip()}", "Options:"]
    lines += [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join(lines)


def direct_answer_prompt(question: str, options: list[str] | tuple[str, ...], category: str) -> str:
    """MMLU-Pro's style of zero-shot prompt for one question."""
    return (
        f"The following is a multiple choice question about {category}. {ANSWER_INSTRUCTION}\n\n"
        f"{question_block(question, options)}"
    )
