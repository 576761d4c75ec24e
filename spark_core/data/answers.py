"""Reading a final answer from model text: MMLU-Pro's official extraction cascade.

Used wherever an answer is read — synthesis, labeling, evaluation, ``spark score-outputs`` —
so accuracies stay comparable with published MMLU-Pro numbers.
"""

from __future__ import annotations

import random
import re

from spark_core.str_enum import StrEnum

LETTERS = "ABCDEFGHIJ"


class AnswerSource(StrEnum):
    """Where a question's final letter came from: the ``answer_source`` column of evaluation's
    rows and labeling's trajectories (synthesis's ``final_answers.source``), one meaning each."""

    ANSWER_ACTION = "answer_action"  # the policy took the answer action; its input's letter
    STATED = "stated"  # 'the answer is (X)' written in a step's thought or input
    FINAL_PROMPT = "final_prompt"  # asked for after the last step (the prefilled answer step)
    GUESS = "guess"  # no letter could be read: MMLU-Pro's seeded random guess


_ANSWER_IS = re.compile(r"answer is \(?([A-J])\)?")
# a look-ahead, so overlapping occurrences ("answer:Answer:C") are all found
_ANSWER_COLON_ANY = re.compile(r"(?=[aA]nswer:\s*([A-J]))")
_LETTER = re.compile(r"\b[A-J]\b")
# MMLU-Pro's own patterns for the last two stages: the same letters, in quadratic time
_REFERENCE_COLON = re.compile(r".*[aA]nswer:\s*([A-J])")
_REFERENCE_LAST = re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)", re.DOTALL)


def _answer_colon(text: str) -> str | None:
    r"""``.*[aA]nswer:\s*([A-J])`` searched from the start, in linear time: the first line
    that holds an 'answer: X' and, greedy ``.*``, the last one on that line."""
    found = None
    line_end = -1
    for match in _ANSWER_COLON_ANY.finditer(text):
        if found is None:
            line_end = text.find("\n", match.start())
            line_end = len(text) if line_end < 0 else line_end
        elif match.start() >= line_end:
            break
        found = match.group(1)
    return found


def _last_letter(text: str) -> str | None:
    """The last standalone A-J: ``\b[A-J]\b`` only looks at a letter's two neighbours, so
    the first match in the reversed text is the last one in the text."""
    match = _LETTER.search(text[::-1])
    return match.group(0) if match else None


def extract_answer(text: str) -> str | None:
    """The cascade: 'answer is (X)', then 'Answer: X', then the last standalone letter A-J —
    MMLU-Pro's extraction, with its last two regexes rewritten to run in linear time."""
    match = _ANSWER_IS.search(text)
    if match:
        return match.group(1)
    return _answer_colon(text) or _last_letter(text)


def reference_extract_answer(text: str) -> str | None:
    """MMLU-Pro's regexes verbatim (quadratic on long texts without an answer): the reference
    ``extract_answer`` is checked against in tests and bench/score_outputs.py."""
    for pattern in (_ANSWER_IS, _REFERENCE_COLON):
        match = pattern.search(text)
        if match:
            return match.group(1)
    match = _REFERENCE_LAST.search(text)
    return match.group(0) if match else None


def read_letter(text: str, n_options: int) -> str | None:
    """The letter in the model's own text (MMLU-Pro's cascade, no wrapping), if it names one
    of the question's options."""
    letter = extract_answer(text)
    return letter if letter is not None and LETTERS.index(letter) < n_options else None


def answer_or_guess(text: str, n_options: int, rng: random.Random) -> tuple[str, bool]:
    """MMLU-Pro's no-answer rule: a random guess among the options. Returns (letter, guessed)."""
    letter = read_letter(text, n_options)
    if letter is not None:
        return letter, False
    return LETTERS[rng.randrange(n_options)], True
