"""Reading a final answer from model text: MMLU-Pro's official extraction cascade.

Used wherever an answer is read — synthesis, labeling, evaluation, ``spark score-outputs`` —
so accuracies stay comparable with published MMLU-Pro numbers.
"""

from __future__ import annotations

import random
import re

LETTERS = "ABCDEFGHIJ"
_ANSWER_IS = re.compile(r"answer is \(?([A-J])\)?")
_ANSWER_COLON = re.compile(r".*[aA]nswer:\s*([A-J])")
_LAST_LETTER = re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)", re.DOTALL)


def extract_answer(text: str) -> str | None:
    """The cascade: 'answer is (X)', then 'Answer: X', then the last standalone letter A-J."""
    match = _ANSWER_IS.search(text)
    if match:
        return match.group(1)
    match = _ANSWER_COLON.search(text)
    if match:
        return match.group(1)
    match = _LAST_LETTER.search(text)
    if match:
        return match.group(0)
    return None


def answer_or_guess(text: str, n_options: int, rng: random.Random) -> tuple[str, bool]:
    """MMLU-Pro's no-answer rule: a random guess among the options. Returns (letter, guessed)."""
    letter = extract_answer(text)
    if letter is not None and LETTERS.index(letter) < n_options:
        return letter, False
    return LETTERS[rng.randrange(n_options)], True
