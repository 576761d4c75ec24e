"""Behaviour log-probs: log pi_beta(token | state) of every selected completion, under the model
that wrote it, stored at synthesis. Offline PPO uses them as pi_beta only when another model
wrote the data (``training.ppo.behaviour_source: stored``); when the trained base weights wrote it
(an hf generator), pi_beta is re-scored by the trainer's reference pass on the training row under
the training precision, and these are the check (``behaviour_gap_mean/max``).

The tokens are exactly the ones training scores (``training.data.chat_ids``: the chat prompt,
then the completion and its turn's end token), so the stored list lines up with the trained
tokens one to one. For the hf backend they come from one teacher-forced forward pass of the
generator (same weights, dtype and device as generation); the distribution is the model's own
softmax at temperature 1 — greedy decoding has no density of its own, and which candidate became
the step was decided by the selection rule, not sampled. For the openai backend they come from
the ``logprobs`` the server returned with the thought and the input: each training token whose
character span matches one generated token gets its log-prob; the others (the labels, the action
name: text the server did not write, or a token split differently) are NaN, and the trainer uses
the reference log-prob there. A server that returns no log-probs leaves the row's list null, and
training then needs ``training.ppo.behaviour_source: reference`` (the server ran the trained base
weights) or ``training.ppo.old_logprobs: refresh``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import torch

from spark_core.config import RunConfig
from spark_core.models.hf.prefix_cache import common_prefix_len, read_prefix, shared_forward
from spark_core.protocol import Question, render_step, state_message, system_prompt, tool_lines
from spark_core.training.data import chat_ids

# floats of logits (and as many of their log-softmax) one pass may hold: 128 MB each. The
# window of a batch of ~400-token states times a 49k vocabulary is ~30 MB a row: without a
# bound, the selection's eight-row passes were synthesis's peak (+0.5 GB in the demo)
LOGITS_BUDGET = 2**25


def _passes(
    encoded: list[tuple[list[int], list[int]]], batch_size: int, vocab: int
) -> list[list[int]]:
    """Rows in prompt-length order, cut into passes of at most ``batch_size`` rows whose
    logits window (earliest completion to longest row) fits ``LOGITS_BUDGET``."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    passes: list[list[int]] = []
    for i in order:
        rows = [*passes[-1], i] if passes else [i]
        window = max(len(encoded[j][0]) + len(encoded[j][1]) for j in rows) - min(
            len(encoded[j][0]) for j in rows
        )
        fits = len(rows) <= batch_size and len(rows) * window * vocab <= LOGITS_BUDGET
        if passes and fits:
            passes[-1].append(i)
        else:
            passes.append([i])
    return passes


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
    encoded = [chat_ids(tokenizer, *row) for row in rows]
    if not encoded:
        return []
    seqs = [p + c for p, c in encoded]
    # the prefix every row shares (the system prompt) is read once, when it ends inside every
    # prompt; each pass runs its rows' own tokens on it
    shared = common_prefix_len(seqs) if len(seqs) > 1 else 0
    shared = shared if shared <= min(len(p) for p, _ in encoded) - 1 else 0
    vocab = model.get_output_embeddings().weight.shape[0]
    results: dict[int, list[float]] = {}
    with backend.computing():
        prefix = read_prefix(model, seqs[0][:shared], backend.device) if shared else None
        # rows of similar prompt length together: the vocabulary is projected only from the
        # earliest completion of a pass on (the prompt's logits are never read)
        for indices in _passes(encoded, batch_size, vocab):
            chunk = [encoded[i] for i in indices]
            part = [seqs[i] for i in indices]
            low = min(len(p) for p, _ in chunk) - 1 - shared  # suffix column of a first token
            width = max(len(s) for s in part) - shared
            fwd = shared_forward(
                model, part, pad, backend.device, False, list(range(low, width)), prefix
            )
            logp = torch.log_softmax(fwd.logits.float()[:, :-1], dim=-1)
            suffix = torch.tensor(
                [s[shared:] + [pad] * (width - len(s) + shared) for s in part],
                device=backend.device,
            )
            token_logp = torch.gather(logp, -1, suffix[:, low + 1 :, None]).squeeze(-1).cpu()
            del fwd, logp
            for i, row, (prompt_ids, completion_ids) in zip(
                indices, range(len(chunk)), chunk, strict=True
            ):
                first = len(prompt_ids) - 1 - shared - low
                results[i] = token_logp[row, first : first + len(completion_ids)].tolist()
    return [results[i] for i in range(len(encoded))]


def _spans(tokens: list[list], start: int) -> dict[tuple[int, int], float]:
    """Character spans (in the completion) of generated tokens whose text was stripped and
    placed at ``start``."""
    raw = "".join(t for t, _ in tokens)
    lead, out, pos = len(raw) - len(raw.lstrip()), {}, 0
    for token, logprob in tokens:
        begin, pos = pos - lead, pos + len(token)
        if begin >= 0:
            out[(start + begin, start + pos - lead)] = float(logprob)
    return out


def aligned_logprobs(
    tokenizer: Any,
    row: tuple[str, str, str],
    thought: str,
    action: str,
    tool_input: str,
    generated: dict[str, list[list] | None],
) -> list[float] | None:
    """Server log-probs (``generated``: [token, logprob] lists of the thought and the input)
    laid onto the training tokens of the completion ``row[2]``; NaN where no generated token
    has the same span. None when nothing lines up."""
    system, prompt, completion = row
    chat = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*chat, {"role": "assistant", "content": completion}], tokenize=False
    )
    enc = tokenizer(full[len(prompt_text) :], add_special_tokens=False, return_offsets_mapping=True)
    spans: dict[tuple[int, int], float] = {}
    starts = {
        "thought": len("Thought: "),
        "input": len(render_step(thought, action, "")),
    }
    texts = {"thought": thought.strip(), "input": tool_input.strip()}
    for part, tokens in generated.items():
        if tokens and "".join(t for t, _ in tokens).strip() == texts[part]:
            spans.update(_spans(tokens, starts[part]))
    out = [spans.get(tuple(span), math.nan) for span in enc["offset_mapping"]]
    return None if all(math.isnan(v) for v in out) else out


def add_behaviour_logprobs(
    cfg: RunConfig,
    selected: pa.Table,
    questions: dict[int, Question],
    backend: Any,
    candidates: pa.Table | None = None,
) -> pa.Table:
    """``selected`` with its ``behaviour_logprobs`` column filled (null where the backend gives
    none): the completions as training will see them, in the state they were selected in.
    ``candidates`` carries the openai backend's generated log-probs."""
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
    if logprobs is None and candidates is not None:
        logprobs = _from_server(cfg, rows, triples, candidates)
    for row, lp in zip(rows, logprobs or [None] * len(rows), strict=True):
        row["behaviour_logprobs"] = lp
    return pa.Table.from_pylist(rows, schema=selected.schema)


def _from_server(
    cfg: RunConfig, rows: list[dict], triples: list[tuple[str, str, str]], candidates: pa.Table
) -> list[list[float] | None]:
    """The openai generator's own log-probs, aligned with the training tokenizer (the
    trained base model's, ``generator.name``)."""
    from spark_core.models.hf.backend import load_tokenizer
    from spark_core.models.hf.default_model import resolve_model

    found = {
        (c["question_id"], c["action"]): c for c in candidates.to_pylist() if c.get("gen_logprobs")
    }
    if not found:
        return [None] * len(rows)
    tokenizer = load_tokenizer(resolve_model(cfg.generator.name))
    out: list[list[float] | None] = []
    for row, triple in zip(rows, triples, strict=True):
        cand = found.get((row["question_id"], row["action"]))
        out.append(
            None
            if cand is None
            else aligned_logprobs(
                tokenizer,
                triple,
                cand["thought"],
                row["action"],
                cand["tool_input"],
                json.loads(cand["gen_logprobs"]),
            )
        )
    return out
