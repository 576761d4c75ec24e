"""How long a run will take, before it runs: a short calibration on this machine, then the
wall time of every stage from the run's own questions and config.

The calibration measures what the stages spend their time on: the generator's prefill rate
and decode-step time at the configured batch size for prompts of the preset's length (or, on
an ``openai`` generator, its latency per call), the judge's time per judgement from the same
calibration items the preflight scores (latency over ``judge.concurrency``), the sandbox's
calls per second at ``tools.parallelism``, and the trainer's forward+backward tokens per
second with the configured LoRA/QLoRA at ``training.batch_size``. The estimate replays the
stages' work with those rates, step by step, under the plan's upper bounds (every question
rolls every step), but leaves out what is not model or tool work (Prefect, Parquet, the
threads of parallel shards waiting on one CPU): on the idle 2-core machine the demo's
synthesis, training and evaluation took 1.01-1.23x their estimates (``bench/estimate.py``).
Used by ``spark run --dry-run`` and ``spark check``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from spark_core.config import RunConfig
from spark_core.memory import large_frees_returned
from spark_core.protocol import Question, policy_messages

PASS_COST = {"sft": 1.0, "ppo": 1.0, "dpo": 2.0}  # sequences read per example (DPO: a pair)


@dataclass
class Rates:
    """What the calibration measured (seconds; tokens per second)."""

    load_s: float = 0.0  # loading the generator and judge weights (once per stage process)
    chars_per_token: float = 4.0  # the generator's tokenizer on the run's prompts
    gen_batch: int = 1
    prompt_tokens: int = 0  # the calibration prompts' mean length
    prefill_tps: float | None = None  # hf: prompt tokens per second at gen_batch
    decode_step_s: float | None = None  # hf: seconds per decoding step of gen_batch rows
    decode_one_s: float | None = None  # hf: seconds per decoding step of one row
    call_s: float | None = None  # openai: latency per call over generator.concurrency
    judge_s: float = 0.0  # per judgement, concurrency included
    sandbox_start_s: float = 0.0
    tool_s: float = 0.0  # per tool call at tools.parallelism
    train_tps: float | None = None  # trainer tokens/s (forward + backward), None: not measured
    train_load_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StageTime:
    stage: str
    seconds: float
    basis: str  # what the figure is made of, for the table


def _tokens(cfg: RunConfig, rates: Rates, chars: float) -> int:
    return int(chars / rates.chars_per_token) + 8 * 2  # two chat messages' template tokens


def _policy_chars(cfg: RunConfig, q: Question, step: int) -> int:
    from spark_core.judge_costs import step_chars

    trajectory = "x" * ((step - 1) * step_chars(cfg))
    return sum(len(c) for _, c in policy_messages(q, trajectory, cfg.rollout.actions))


def _generation_s(rates: Rates, prompt_tokens: int, rows: int, new_tokens: int) -> float:
    """``rows`` prompts of ``prompt_tokens`` each, batched, decoding ``new_tokens``."""
    if rates.call_s is not None:  # an endpoint: calls in flight at its concurrency
        return rows * rates.call_s
    batches = math.ceil(rows / max(rates.gen_batch, 1))
    prefill = rows * prompt_tokens / (rates.prefill_tps or 1.0)
    return prefill + batches * new_tokens * (rates.decode_step_s or 0.0)


def _decode_rows_s(rates: Rates, rows: int) -> float:
    """One decoding step of ``rows`` rows: a step's fixed cost (the weights read once) plus
    each row's share, from the two calibrated batch sizes."""
    step, one = rates.decode_step_s or 0.0, rates.decode_one_s
    if one is None or rates.gen_batch <= 1:
        return step * math.ceil(rows / max(rates.gen_batch, 1))
    per_row = max(step - one, 0.0) / (rates.gen_batch - 1)
    return one + per_row * rows


def synthesis_time(cfg: RunConfig, rates: Rates, train: list[Question]) -> StageTime:
    """Per step and question: the thought (batched over the questions), then the candidates'
    inputs on the thought's KV session (only each candidate's action line is read; a
    session's candidates decode together, every row to the end: an upper bound), the tools in
    the sandbox, the judge on every candidate; then the final answers."""
    r, n = cfg.rollout, len(cfg.rollout.actions)
    seconds = rates.load_s + rates.sandbox_start_s
    tools = n - ("cot" in r.actions)
    for step in range(1, r.steps + 1):
        prompts = [_tokens(cfg, rates, _policy_chars(cfg, q, step)) for q in train]
        mean = sum(prompts) / max(len(prompts), 1)
        seconds += _generation_s(rates, int(mean), len(train), r.thought_tokens)
        # the candidates continue the thought's session (step_session.py): no second read
        rows = len(train) * n
        seconds += rows * 4 / (rates.prefill_tps or 1.0)  # "\nAction: <name>\nAction Input:"
        if rates.call_s is not None:
            seconds += rows * rates.call_s
        else:  # a session per gen_batch questions, its rows decoding together
            for first in range(0, len(train), max(rates.gen_batch, 1)):
                questions = min(rates.gen_batch, len(train) - first)
                seconds += r.input_tokens * _decode_rows_s(rates, questions * n)
        seconds += len(train) * tools * (1 + r.tool_retries) * rates.tool_s
        seconds += rows * rates.judge_s
        if rates.call_s is None:  # the selection reads the selected steps' log-probs again
            step = mean + r.thought_tokens + r.input_tokens
            seconds += len(train) * step / (rates.prefill_tps or 1.0)
    final = [_tokens(cfg, rates, _policy_chars(cfg, q, r.steps + 1)) for q in train]
    seconds += _generation_s(rates, int(sum(final) / max(len(final), 1)), len(train), 3)
    basis = f"{len(train)} questions x {r.steps} steps x {n} candidates"
    return StageTime("synthesize", seconds, basis)


def training_time(cfg: RunConfig, rates: Rates, train: list[Question]) -> StageTime:
    """Every trainer's epochs over the selected steps (one per question and step at most),
    each as long as its state plus one step."""
    t, r = cfg.training, cfg.rollout
    if rates.train_tps is None:
        return StageTime("train", float("nan"), "trainer not calibrated")
    tokens = 0
    for q in train:
        for step in range(1, r.steps + 1):
            state = _tokens(cfg, rates, _policy_chars(cfg, q, step))
            tokens += min(state + r.thought_tokens + r.input_tokens, t.max_seq_len)
    epochs = {"sft": t.sft.epochs, "ppo": t.ppo.epochs, "dpo": t.dpo.epochs}
    seconds = 0.0
    seeds = len(t.seed_list())
    for trainer in t.trainers:
        seconds += seeds * (
            rates.train_load_s + epochs[trainer] * PASS_COST[trainer] * tokens / rates.train_tps
        )
    runs = f"{', '.join(t.trainers)}" + (f" x {seeds} seeds" if seeds > 1 else "")
    return StageTime("train", seconds, f"{runs}: {tokens:,} tokens per epoch")


def evaluation_time(cfg: RunConfig, rates: Rates, questions: list[Question]) -> StageTime:
    """Every rollout (``evaluated_policies``) on the rollout questions: each step reads the
    batch's states once and decodes a thought and an input (the action is scored, not
    decoded), then the tools; then the final answers. Then the common states: one prompt
    read per held-out question and local greedy policy."""
    from spark_core.evaluation.common_states import stratified_subset
    from spark_core.evaluation.policies import evaluated_policies

    e, r = cfg.evaluation, cfg.rollout
    targets = evaluated_policies(cfg)
    rolled = stratified_subset(questions, e.rollout_questions, e.seed)
    # an adapter policy loads a copy of the weights to merge into; another model its own
    loads = sum(t.name != "base" and not t.temperature for t in targets) * rates.load_s / 2
    per_policy = 0.0
    for step in range(1, e.steps + 1):
        prompts = [_tokens(cfg, rates, _policy_chars(cfg, q, step)) for q in rolled]
        mean = int(sum(prompts) / max(len(prompts), 1))
        new = r.thought_tokens + r.input_tokens
        per_policy += _generation_s(rates, mean, len(rolled), new)
        per_policy += len(rolled) * (1 + r.tool_retries) * rates.tool_s
    per_policy += _generation_s(rates, mean, len(rolled), 3)
    seconds = rates.load_s + loads + len(targets) * per_policy
    basis = f"{len(targets)} policies x {len(rolled)} questions x {e.steps} steps"
    if e.common_states and rates.prefill_tps:
        scored = sum(not t.temperature and t.name not in e.extra_models for t in targets)
        states = [_tokens(cfg, rates, _policy_chars(cfg, q, 1)) for q in questions]
        seconds += scored * sum(states) / rates.prefill_tps
        basis += f"; common states: {scored} policies x {len(questions)} questions"
    return StageTime("evaluate", seconds, basis)


def estimate(
    cfg: RunConfig, rates: Rates, train: list[Question], evaluate: list[Question]
) -> list[StageTime]:
    """Estimated wall time of every stage (ingest and label: seconds of Parquet work)."""
    return [
        StageTime("ingest", 1.0, "read, validate, split"),
        synthesis_time(cfg, rates, train),
        StageTime("label", 1.0, "rewards and returns"),
        training_time(cfg, rates, train),
        evaluation_time(cfg, rates, evaluate),
    ]


# -- calibration ---------------------------------------------------------------------------
def calibrate(cfg: RunConfig, questions: list[Question], judge_latency_s: float) -> Rates:
    """Measure the rates on this machine (tens of seconds on a laptop CPU).
    ``judge_latency_s``: the preflight's latency per judgement."""
    rates = Rates()
    _calibrate_generator(cfg, questions, rates)
    if cfg.judge.backend == "hf":  # as synthesis judges: a state's candidates together
        rates.judge_s = _calibrate_local_judge(cfg, questions[0])
    else:
        rates.judge_s = judge_latency_s / cfg.judge.concurrency
    _calibrate_sandbox(cfg, rates)
    _calibrate_trainer(cfg, questions, rates)
    return rates


def _calibrate_generator(cfg: RunConfig, questions: list[Question], rates: Rates) -> None:
    from spark_core.models.backends import make_backend
    from spark_core.models.hf.kv_session import KVSession
    from spark_core.models.requests import ChatRequest

    gen = cfg.generator
    start = time.perf_counter()
    backend = make_backend(gen)
    rates.load_s = time.perf_counter() - start
    if gen.backend != "hf" or cfg.judge.name != gen.name:
        rates.load_s *= 2  # the judge's weights too (an endpoint: nothing to load)
    batch = gen.batch_size if gen.backend == "hf" else 1
    rows = [questions[i % len(questions)] for i in range(batch)]
    # distinct trajectories: identical prompts would share one prefix pass, not a batch
    requests = [
        ChatRequest(
            policy_messages(q, f"(calibration {i})", cfg.rollout.actions),
            max_new_tokens=cfg.rollout.thought_tokens,
            prefill="Thought:",
        )
        for i, q in enumerate(rows)
    ]
    if gen.backend != "hf":
        start = time.perf_counter()
        backend.generate(requests[:1])
        rates.call_s = (time.perf_counter() - start) / gen.concurrency
        return
    texts = [backend.prompt_text(r) for r in requests]
    rows_ids = [backend.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    lengths = [len(r) for r in rows_ids]
    rates.chars_per_token = sum(len(t) for t in texts) / sum(lengths)
    rates.gen_batch, rates.prompt_tokens = batch, int(sum(lengths) / len(lengths))
    warm = ChatRequest(requests[0].messages, max_new_tokens=1, prefill="Thought:")
    backend.generate([warm])  # warm-up: first-call overheads
    # the way synthesis decodes (step_session.py): read the batch's prompts in one session,
    # then one token per row per step
    steps = max(min(cfg.rollout.thought_tokens, 16), 2)
    with backend.computing():
        session = KVSession(backend.model, backend.tokenizer.pad_token_id, backend.device)
        start = time.perf_counter()
        session.start(rows_ids)
        rates.prefill_tps = sum(lengths) / (time.perf_counter() - start)
        token = [[rows_ids[0][-1]] for _ in rows_ids]
        start = time.perf_counter()
        for _ in range(steps):
            session.feed(token)
        rates.decode_step_s = (time.perf_counter() - start) / steps
        session.keep_rows([0])  # and one row: a step's fixed cost, for larger batches
        start = time.perf_counter()
        for _ in range(steps):
            session.feed(token[:1])
        rates.decode_one_s = (time.perf_counter() - start) / steps


def _calibrate_local_judge(cfg: RunConfig, q: Question) -> float:
    """Seconds per judgement of a local judge, scoring two first-step states' candidates as
    synthesis does (``judge.local_batching``: in ``prefix`` mode the rubric and each state
    are read once, then every candidate on them). The preflight's latency is no guide: it
    scores pairs. The thoughts and observations are the question's own text, cut to the
    rollout's lengths (the second state's thought starts a word later)."""
    from spark_core.judge_costs import CHARS_PER_TOKEN
    from spark_core.models.judge.judge import make_judge
    from spark_core.models.judge.prompt import JudgeItem

    r = cfg.rollout
    thought_chars, input_chars = (
        int(n * CHARS_PER_TOKEN) for n in (r.thought_tokens, r.input_tokens)
    )
    longest = max(thought_chars, input_chars, r.observation_chars)
    text = " ".join([q.question] * (1 + longest // max(len(q.question), 1)))
    later = text.find(" ") + 1
    items = [
        JudgeItem(
            q.question,
            q.options,
            "",
            a,
            text[:input_chars],
            text[: r.observation_chars],
            text[offset : offset + thought_chars],
        )
        for offset in (0, later)
        for a in r.actions
    ]
    scorer = make_judge(cfg.judge, None).scorer
    scorer.score(items[:2])  # warm-up: first-call overheads
    start = time.perf_counter()
    scorer.score(items)
    return (time.perf_counter() - start) / len(items)


def _calibrate_sandbox(cfg: RunConfig, rates: Rates) -> None:
    from spark_core.tools.batch import ToolCall, run_batch
    from spark_core.tools.sandbox import Sandbox, SandboxLimits

    start = time.perf_counter()
    with Sandbox(SandboxLimits.from_config(cfg.tools), {"corpus": cfg.tools.corpus}) as sandbox:
        run_batch([ToolCall(0, 0, "calculator", "1+1")], sandbox, 1)
        rates.sandbox_start_s = time.perf_counter() - start
        n = 4 * cfg.tools.parallelism
        calls = [ToolCall(i, 0, "calculator", f"{i} * 3 + 1") for i in range(n)]
        start = time.perf_counter()
        run_batch(calls, sandbox, cfg.tools.parallelism)
        rates.tool_s = (time.perf_counter() - start) / n


def _calibrate_trainer(cfg: RunConfig, questions: list[Question], rates: Rates) -> None:
    """Two forward+backward passes of a LoRA model (the second timed) on a batch of
    ``training.batch_size`` sequences as long as a state plus one step, with activation
    checkpointing when training uses it."""
    import torch
    from peft import get_peft_model

    from spark_core.models.hf.default_model import resolve_model
    from spark_core.training.hardware import choose_precision, load_base, lora_config

    t, r = cfg.training, cfg.rollout
    start = time.perf_counter()
    model = get_peft_model(
        load_base(resolve_model(cfg.generator.name), choose_precision(t)),
        lora_config(t.lora),
    )
    if t.activation_checkpointing:  # the recomputation is part of what a step costs
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    rates.train_load_s = time.perf_counter() - start
    chars = _policy_chars(cfg, questions[0], 1)
    length = min(_tokens(cfg, rates, chars) + r.thought_tokens + r.input_tokens, t.max_seq_len)
    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (t.batch_size, length), device=device)
    with large_frees_returned():  # as the trainers run
        for _attempt in range(2):
            start = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
    rates.train_tps = t.batch_size * length / elapsed
    del model
