"""What a run will ask of its models, before it asks: calls, tokens and cost per stage.

Counts are upper bounds (every question rolls every step; every judgement succeeds on its
first attempt; with ``rollout.tool_retries`` every tool call fails and is repaired each time);
prompt sizes come from the real prompt templates rendered on the run's own questions, at about
4 characters per token; completions at their token limits. Used by ``spark run --dry-run`` and
``spark check`` — no model is loaded or called.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from spark_core.config import ModelConfig, RunConfig
from spark_core.judge_costs import step_chars
from spark_core.models.judge.prompt import JudgeItem, judge_messages
from spark_core.models.prices import prices_for
from spark_core.protocol import Question, state_message, system_prompt, tool_lines
from spark_core.synthesis.repair import ERROR_CHARS, REPAIR_QUESTION

CHARS_PER_TOKEN = 4.0  # typical English on GPT-4o / Llama-3 tokenizers
MESSAGE_OVERHEAD = 8  # chat-template tokens per message


@dataclass
class PlannedCalls:
    stage: str
    role: str
    model: str
    backend: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None

    def add(self, n: int, prompt_chars: float, messages: int, completion_tokens: int) -> None:
        self.calls += n
        self.prompt_tokens += n * int(prompt_chars / CHARS_PER_TOKEN + MESSAGE_OVERHEAD * messages)
        self.completion_tokens += n * completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _priced(plan: PlannedCalls, model: ModelConfig) -> PlannedCalls:
    prices = prices_for(model.name, model.price_per_1k_prompt, model.price_per_1k_completion)
    if prices is not None:
        plan.cost_usd = (plan.prompt_tokens * prices[0] + plan.completion_tokens * prices[1]) / 1000
    elif model.backend == "hf":
        plan.cost_usd = 0.0  # local compute
    return plan


def repair_chars(cfg: RunConfig) -> int:
    """What a repair prompt (``repair.py``) adds to the state: the failed step, the error and
    the question (``rollout.tool_retries``)."""
    r = cfg.rollout
    failed_step = int((r.thought_tokens + r.input_tokens) * CHARS_PER_TOKEN) + 40
    return failed_step + ERROR_CHARS + len(REPAIR_QUESTION) + 20


def plan_synthesis(cfg: RunConfig, train: list[Question]) -> tuple[PlannedCalls, PlannedCalls]:
    """(generator, judge) calls of the synthesize stage."""
    r = cfg.rollout
    gen = PlannedCalls("synthesize", "generator", cfg.generator.name, cfg.generator.backend)
    judge = PlannedCalls("synthesize", "judge", cfg.judge.name, cfg.judge.backend)
    system = len(system_prompt(tool_lines(r.actions)))
    n = len(r.actions)
    candidate = int(r.input_tokens * CHARS_PER_TOKEN) + r.observation_chars
    for q in train:
        for step in range(1, r.steps + 1):
            trajectory = "x" * ((step - 1) * step_chars(cfg))
            policy = system + len(state_message(q.question, q.options, trajectory))
            thinkers = n if r.thoughts == "per_action" else 1  # a thought per candidate
            gen.add(thinkers, policy + 8 + 40 * (thinkers > 1), 2, r.thought_tokens)
            gen.add(n, policy + r.thought_tokens * CHARS_PER_TOKEN + 40, 2, r.input_tokens)
            tools = n - ("cot" in r.actions)  # every tool call fails and is repaired each time
            gen.add(tools * r.tool_retries, policy + repair_chars(cfg), 4, r.input_tokens)
            item = JudgeItem(
                question=q.question,
                options=q.options,
                trajectory=trajectory,
                action="calculator",
                tool_input="",
                tool_output="",
                thought="x" * int(r.thought_tokens * CHARS_PER_TOKEN),  # the judge sees it
            )
            judged = sum(len(c) for _, c in judge_messages(item)) + candidate
            judge.add(n, judged, 2, cfg.judge.max_new_tokens)
        final = system + len(state_message(q.question, q.options, "x" * r.steps * step_chars(cfg)))
        gen.add(1, final + 80, 2, 3)
    judge = _priced(judge, cfg.judge)
    if cfg.judge.mode != "per_candidate" or cfg.judge.batch:  # judge_costs.py prices these
        from spark_core.judge_costs import configured

        c = configured(cfg, train)
        judge.calls, judge.prompt_tokens = c.calls, c.prompt_tokens
        judge.completion_tokens, judge.cost_usd = c.completion_tokens, c.cost_usd
    return _priced(gen, cfg.generator), judge


def plan_evaluation(cfg: RunConfig, questions: list[Question]) -> list[PlannedCalls]:
    """Policy calls of the evaluate stage: each rollout (base@T per temperature, trained
    policies per seed), each question of the rollout subset, every step. The common states
    call no paid model (local policies only)."""
    from spark_core.evaluation.common_states import stratified_subset
    from spark_core.evaluation.policies import evaluated_policies

    e, r = cfg.evaluation, cfg.rollout
    system = len(system_prompt(tool_lines(r.actions)))
    questions = stratified_subset(questions, e.rollout_questions, e.seed)
    # built-in policies and extra adapters run on the generator's model; extra models on theirs
    models: dict[str, ModelConfig] = {
        t.name: e.extra_models.get(t.name, cfg.generator) for t in evaluated_policies(cfg)
    }
    plans = []
    for policy, model in models.items():
        plan = PlannedCalls("evaluate", f"policy {policy}", model.name, model.backend)
        for q in questions:
            for step in range(1, e.steps + 1):
                trajectory = "x" * ((step - 1) * step_chars(cfg))
                prompt = system + len(state_message(q.question, q.options, trajectory))
                plan.add(1, prompt + 8, 2, r.thought_tokens + r.input_tokens)
                plan.add(r.tool_retries, prompt + repair_chars(cfg), 4, r.input_tokens)
            plan.add(1, system + len(state_message(q.question, q.options, "")) + 80, 2, 3)
        plans.append(_priced(plan, model))
    return plans


def plan_run(cfg: RunConfig, train: list[Question], evaluate: list[Question]) -> list[PlannedCalls]:
    """Every model call of a whole run, per stage and model (ingest, label and train call
    none: training runs on the trajectories)."""
    return [*plan_synthesis(cfg, train), *plan_evaluation(cfg, evaluate)]
