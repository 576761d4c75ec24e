"""The questions a run will see, read or sampled before it runs: what ``spark run --dry-run``
and ``spark check`` plan with (``cli_check.py``) and the time estimate calibrates on
(``cli_estimate.py``)."""

from __future__ import annotations

import itertools

from spark_core.config import RunConfig


def planned_questions(cfg: RunConfig):
    """(train, eval, note): the run's questions — its ingest artifact when it exists, else the
    source sampled here when it is local; a hub source without one is sized from the config
    with the bundled questions standing in for their length."""
    from spark_core import CATEGORIES
    from spark_core.data.questions import Split, ingest_records
    from spark_core.data.sources import bundled_path, read_file, read_source, source_kind
    from spark_core.synthesis.rollout import Question
    from tasks.caching import store_for
    from tasks.ingest import ingest_unit

    store = store_for(cfg)
    name = list(ingest_unit(cfg).outputs)[-1]  # the questions
    note = "questions from the ingest artifact"
    data = cfg.data
    if store.exists(name):
        rows = store.read(name).to_pylist()
    elif source_kind(data.source) != "hub":
        rows = ingest_records(read_source(data.source), data).questions.to_pylist()
        note = f"questions sampled from {data.source}"
    else:
        n = data.total or (data.per_category or 0) * len(data.categories or CATEGORIES)
        if not n:
            raise ValueError(
                "a hub source with neither data.total nor data.per_category: run `spark "
                "ingest` first, or set one of them, to size the run"
            )
        sample = ingest_records(
            read_file(bundled_path()),
            data.model_copy(
                update={
                    "per_category": None,
                    "total": None,
                    "eval_fraction": 0.0,
                    "eval_total": None,
                }
            ),
        )
        pool = itertools.cycle(sample.questions.to_pylist())
        n_eval = round(n * data.eval_fraction)
        if data.eval_total is not None:  # a separate held-out pool beside the n sampled
            n, n_eval = n + data.eval_total, data.eval_total
        rows = [
            {**next(pool), "split": Split.EVAL if i < n_eval else Split.TRAIN} for i in range(n)
        ]
        note = f"{n} questions from data.total/per_category; lengths from the bundled sample"
    train = [Question.from_row(r) for r in rows if r["split"] == Split.TRAIN]
    evaluate = [Question.from_row(r) for r in rows if r["split"] == Split.EVAL]
    return train, evaluate, note
