"""Behaviour log-probs: log pi_beta(token | state) of every selected completion, under the model
that wrote it, stored at synthesis so offline PPO's importance ratio is pi_theta / pi_beta.

The tokens are exactly the ones training scores (``rl.data.chat_ids``: the chat prompt, then the
completion and its turn's end token), so the stored list lines up with the trained tokens one to
one. For the hf backend they come from one teacher-forced forward pass of the generator (same
weights, dtype and device as generation); the distribution is the model's own softmax at
temperature 1 — greedy decoding has no density of its own, and which candidate became the step
was decided by the selection rule, not sampled. The openai backend gives no log-probs for text it
did not generate itself (the prefilled labels, the action name), so its rows store none and
training needs ``training.old_logprobs: refresh``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch

from spark_core.action_format import state_message, system_prompt
from spark_core.config import RunConfig
from spark_core.rl.data import chat_ids
from spark_core.rollout import Question, tool_lines


@torch.inference_mode()
def completion_logprobs(
    backend: Any, rows: list[tuple[str, str, str]], batch_size: int = 8
) -> list[list[float]] | None:
    """Per-token log-probs of each (system, prompt, completion)'s completion tokens under
    ``backend``'s model; None when the backend cannot score given text (openai)."""
    if getattr(backend, "backend", None) != "hf":
        return None
    tokenizer, model = backend.tokenizer, backend.model
    pad = tokenizer.pad_token_id
    out: list[list[float]] = []
    encoded = [chat_ids(tokenizer, *row) for row in rows]
    with backend._lock, backend._adapter_context():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            seqs = [p + c for p, c in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=backend.device)
            attention = torch.tensor(
                [[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=backend.device
            )
            logits = model(input_ids=ids, attention_mask=attention).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            chosen = torch.gather(logp, -1, ids[:, 1:, None]).squeeze(-1).cpu()
            for row, (prompt_ids, completion_ids) in enumerate(chunk):
                first = len(prompt_ids) - 1  # logits at position i predict token i + 1
                out.append(chosen[row, first : first + len(completion_ids)].tolist())
    return out


def add_behaviour_logprobs(
    cfg: RunConfig, selected: pa.Table, questions: dict[int, Question], backend: Any
) -> pa.Table:
    """``selected`` with its ``behaviour_logprobs`` column filled (null where the backend gives
    none): the completions as training will see them, in the state they were chosen in."""
    rows = selected.to_pylist()
    system = system_prompt(tool_lines(cfg.rollout.actions))
    triples = [
        (
            system,
            state_message(
                questions[r["question_id"]].question,
                questions[r["question_id"]].options,
                r["trajectory_before"],
            ),
            r["completion"],
        )
        for r in rows
    ]
    logprobs = completion_logprobs(backend, triples) if rows else []
    for row, lp in zip(rows, logprobs or [None] * len(rows), strict=True):
        row["behaviour_logprobs"] = lp
    return pa.Table.from_pylist(rows, schema=selected.schema)
