"""A synthesis step's generation on the local backend, both ways, in one process: the thoughts
and then the 9 candidates' inputs as two separate calls (a state read twice, inputs decoded 9
rows at a time per question) against one kept KV session (``step_session.py``). Prints wall
and CPU seconds of each and whether every completion is identical (same candidates => same
judge scores => same selections).

    python bench/step_session.py [--config configs/demo.yaml] [--questions 4] [--repeats 1]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spark_core.config import load_config  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cfg = load_config(args.config, args.set)

    from spark_core.data.questions import Split, ingest_records
    from spark_core.data.sources import read_source
    from spark_core.models.generator import make_generator
    from spark_core.models.hf.step_session import StepSession
    from spark_core.protocol import INPUT_STOP, THOUGHT_STOP, Question
    from spark_core.protocol import policy_messages as messages
    from spark_core.synthesis.rollout import _request

    data = cfg.data
    table = ingest_records(read_source(data.source, data.hub_split, data.hub_revision), data)
    rows = [Question.from_row(r) for r in table.questions.to_pylist() if r["split"] == Split.TRAIN]
    questions = rows[: args.questions]
    backend = make_generator(cfg.generator, None).backend
    actions, r = cfg.rollout.actions, cfg.rollout
    prompts = {q.question_id: messages(q, "", actions) for q in questions}

    def thoughts():
        return [
            _request(cfg, prompts[q.question_id], "Thought:", r.thought_tokens, THOUGHT_STOP, 1)
            for q in questions
        ]

    def inputs(done):
        return [
            _request(
                cfg,
                prompts[q.question_id],
                f"Thought: {t.text.strip()}\nAction: {a}\nAction Input:",
                r.input_tokens,
                INPUT_STOP,
                1,
            )
            for q, t in zip(questions, done, strict=True)
            for a in actions
        ]

    def separate():
        done = backend.generate(thoughts())
        return done, backend.generate(inputs(done))

    def kept():
        step = StepSession(backend)
        done = step.thoughts(thoughts())
        return done, step.inputs(inputs(done))

    backend.generate(thoughts()[:1])  # warm-up: first-call overheads
    seconds = {"separate": [0.0, 0.0], "kept session": [0.0, 0.0]}
    outputs = {}
    for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both
        for name, fn in (("separate", separate), ("kept session", kept)):
            wall, cpu = time.perf_counter(), cpu_seconds()
            outputs[name] = fn()
            seconds[name][0] += time.perf_counter() - wall
            seconds[name][1] += cpu_seconds() - cpu
    print(
        f"synthesis step generation, {args.config}: {len(questions)} questions x "
        f"{len(actions)} candidates, {r.thought_tokens}+{r.input_tokens} tokens, "
        f"{cfg.generator.name}, batch {cfg.generator.batch_size}, {args.repeats} repeat(s)"
    )
    for name, (wall, cpu) in seconds.items():
        print(f"  {name:<13} {wall:7.1f} s wall  {cpu:7.1f} s CPU")
    (sw, sc), (kw, kc) = seconds["separate"], seconds["kept session"]
    print(f"  kept / separate: {kw / sw:.2f}x wall, {kc / sc:.2f}x CPU")
    same = all(
        [c.text for c in outputs["separate"][i]] == [c.text for c in outputs["kept session"][i]]
        for i in (0, 1)
    )
    print(f"  every thought and input identical: {same}")


if __name__ == "__main__":
    main()
