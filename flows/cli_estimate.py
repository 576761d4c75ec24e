"""The time estimate printed by ``spark run --dry-run`` and ``spark check``: a short
calibration on this machine (spark_core/time_estimate.py), then the wall time per stage."""

from __future__ import annotations

from rich.table import Table

from spark_core.config import RunConfig


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan: not calibrated
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def calibrated_estimate(cfg: RunConfig, judge_latency_s: float | None = None):
    """(rates, stage times): calibrate here, then estimate. Without ``judge_latency_s`` the
    judge's preflight is run (or read back when it passed before)."""
    import torch

    from flows.cli_questions import planned_questions
    from spark_core.models.registry import REGISTRY
    from spark_core.preflight import judge_preflight
    from spark_core.time_estimate import calibrate, estimate

    train, evaluate, _ = planned_questions(cfg)
    wanted = [("generator.device", cfg.generator.device)]
    if cfg.judge.backend == "hf":
        wanted.append(("judge.device", cfg.judge.device))
    for field, device in wanted:
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"{field} is {device} but this machine has no CUDA device")
    if judge_latency_s is None:
        report, _ = judge_preflight(cfg, REGISTRY.response_cache(cfg))
        judge_latency_s = report.latency_s
    rates = calibrate(cfg, train or evaluate, judge_latency_s)
    return rates, estimate(cfg, rates, train, evaluate)


def time_table(cfg: RunConfig, judge_latency_s: float | None = None) -> tuple[Table, str]:
    """Estimated wall time per stage and in total, and a line saying what was measured."""
    rates, stages = calibrated_estimate(cfg, judge_latency_s)
    view = Table(title="estimated wall time on this machine (calibrated)")
    for column in ("stage", "estimated time", "work"):
        view.add_column(column, justify="right" if column == "estimated time" else "left")
    for s in stages:
        view.add_row(s.stage, _duration(s.seconds), s.basis)
    view.add_row("total", _duration(sum(s.seconds for s in stages)), "")
    if rates.call_s is not None:
        generator = f"generator {rates.call_s:.2f} s per call (over its concurrency)"
    else:
        generator = (
            f"generator {rates.prefill_tps:,.0f} prompt tokens/s and "
            f"{rates.decode_step_s * 1000:.0f} ms per decoding step at batch {rates.gen_batch} "
            f"({rates.prompt_tokens}-token prompts)"
        )
    train = "not measured" if rates.train_tps is None else f"{rates.train_tps:,.0f} tokens/s"
    note = (
        f"Calibration: {generator}; judge {rates.judge_s:.2f} s per judgement; sandbox "
        f"{1 / rates.tool_s if rates.tool_s else 0:.1f} calls/s; trainer {train}; weights "
        f"loaded in {rates.load_s:.1f} s. Upper bounds (every question rolls every step); "
        "a busy machine makes every stage slower."
    )
    return view, note
