"""The judge: scores a candidate step 0-10.

``prompt`` and ``state_prompt`` (what the judge reads, per candidate or per state), ``scorers``
(``OpenAIJudge``, ``HFJudge``), ``per_state`` (one call per state), ``batch`` (a Batch API job),
``agreement`` (per_candidate vs per_state), and ``judge`` (``Judge``: a scorer behind the
response cache and a stage's stop rules, what stages use).
"""
