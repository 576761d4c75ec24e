"""The linear-time answer extraction reads exactly the letters MMLU-Pro's regexes read."""

from __future__ import annotations

import ast
import json
import random

from spark_core.data.answers import LETTERS, extract_answer, reference_extract_answer

ADVERSARIAL = [
    "",
    "A",
    "It is based on physics",
    "Answer: B and answer: C\nAnswer: D",
    "x\nAnswer:\n\n C",
    "no answer: here\nAnswer: E then A",
    "answer: Z answer: E",
    "x answer:Answer:C) I",
    "Answer:K\nB",
    "éA Ä A_ 1B (C) _D",
    "The answer is (J) but Answer: A",
    "A\r\nB\r\n",
    "answer:\tF",
    "Final Answer: (G)",
    "(H)" + " " * 5000,
    "answer: " + "x" * 3000 + " I",
]
PIECES = [
    "A", "B", "J", "K", "a", "é", "_", "1", "(", ")", ":", " ", "\n", "\r", "\t", "answer:",
    "Answer:", "answer is (", "answer is ", "C)", "The", "option", "I", " x ",
]  # fmt: skip


def _cot(question: dict, ending: int) -> str:
    options = question["options"]
    if isinstance(options, str):
        options = ast.literal_eval(options)
    lines = [f"Let's think step by step. {question['question']}"]
    lines += [f"Option {LETTERS[i]}: {o}." for i, o in enumerate(options)]
    lines += [
        [f"So the answer is ({question['answer']}).", f"Answer: {question['answer']}", "Hmm"][
            ending % 3
        ]
    ]
    return "\n".join(lines)


def test_same_letters_on_adversarial_texts():
    for text in ADVERSARIAL:
        assert extract_answer(text) == reference_extract_answer(text), text
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 40)))
        assert extract_answer(text) == reference_extract_answer(text), repr(text)


def test_same_letters_on_real_looking_outputs(mmlu_pro_test):
    import pyarrow.parquet as pq

    rows = pq.read_table(mmlu_pro_test).slice(0, 300).to_pylist()
    with open("spark_core/data/mmlu_pro_sample.jsonl") as fh:
        rows += [json.loads(line) for line in fh]
    for i, row in enumerate(rows):
        text = _cot(row, i)
        assert extract_answer(text) == reference_extract_answer(text)
        cut = text[: len(text) * 2 // 3]  # a truncated output: only letters in its body
        assert extract_answer(cut) == reference_extract_answer(cut)
