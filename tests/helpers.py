"""Helpers that several test modules share (fixtures stay in conftest.py): adapters and PPO
trainer arguments on the tiny model, real training rows, task runs named for their task, a
flow run's tree on a Prefect server, and a loopback judge that knows the calibration answers.

Cheap to import: what needs torch, transformers or Prefect is imported where it is used."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # this checkout: deployed flows run from it

# --- adapters and PPO on the tiny model (conftest.py: tiny_model_dir) ---------------------


def random_adapter(model_dir: str, seed: int):
    """A PEFT model whose LoRA weights are random (not the identity), as if trained."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(
        r=4,
        lora_alpha=64,
        init_lora_weights=False,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)


def make_policy(model_dir: str, seed: int = 0):
    """A PEFT model with a fresh LoRA adapter (the identity until trained): a policy to train."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    return get_peft_model(
        base,
        LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )


PPO_SYSTEM = "Solve the question."


def ppo_rows(n: int = 4) -> list[dict]:
    """``n`` short PPO rows, advantages alternating +1 / -1."""
    return [
        {
            "system": PPO_SYSTEM,
            "prompt": f"Question {i}: what is {i} + {i}?",
            "completion": f"Thought: add.\nAction: calculator\nAction Input: {i}+{i}",
            "advantage": 1.0 if i % 2 == 0 else -1.0,
        }
        for i in range(n)
    ]


def ppo_args(tmp_path, **over):
    """Trainer arguments as a run builds them: PPO terms (``over``'s keys among
    ``OfflinePPOConfig.PPO_TERMS``) through ``training.ppo``, the rest as TrainingArguments."""
    from spark_core.config import PPOSettings
    from spark_core.training.ppo_trainer import OfflinePPOConfig

    terms = {k: over.pop(k) for k in OfflinePPOConfig.PPO_TERMS if k in over}
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        num_train_epochs=1,
        learning_rate=5e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        lr_scheduler_type="constant",
    )
    base.update(over)
    ppo = PPOSettings(**{"old_logprobs": "refresh", **terms})
    return OfflinePPOConfig.from_training(ppo, **base)


# --- training rows in the real prompt format ----------------------------------------------

QUESTION = "How many moles of water are in 36 g of water?"
OPTIONS = ["1", "2", "3", "4"]


@cache
def training_system() -> str:
    """The real system prompt offering calculator, chemistry and cot."""
    from spark_core.protocol import system_prompt, tool_lines

    return system_prompt(tool_lines(["calculator", "chemistry", "cot"]))


def long_row(steps: int) -> dict:
    """A training row whose state holds ``steps`` long earlier steps (for truncation)."""
    from spark_core.protocol import render_step, state_message, trajectory_entry

    trajectory = "\n".join(
        trajectory_entry(
            render_step(f"step {i}: " + "weigh the sample again " * 12, "calculator", f"{i}*18"),
            f"{i * 18} " + "grams measured " * 10,
        )
        for i in range(1, steps + 1)
    )
    return {
        "system": training_system(),
        "prompt": state_message(QUESTION, OPTIONS, trajectory),
        "completion": render_step("Divide by the molar mass.", "chemistry", "36 / 18.015"),
        "advantage": 1.0,
    }


# --- task runs and flow runs on a Prefect server -------------------------------------------

STAGE_MODULES = ("ingest", "synthesize", "label", "train", "evaluate")


def task_names() -> dict[str, str]:
    """Task key -> task name, for every task of the stages' task modules.

    Task runs are named for what they do ("rollout-step1-shard0", "train-sft",
    "evaluate-ppo"); tests group them by the task they ran ("rollout-shard",
    "train-adapter", "evaluate-policy"), found through the task key every task run carries."""
    from prefect import Task

    names = {}
    for stage in STAGE_MODULES:
        module = importlib.import_module(f"tasks.{stage}")
        for obj in vars(module).values():
            if isinstance(obj, Task):
                names[obj.task_key] = obj.name
    return names


def task_name(run) -> str:  # noqa: ANN001 (a TaskRun, or its REST API dict)
    key, name = (
        (run["task_key"], run["name"]) if isinstance(run, dict) else (run.task_key, run.name)
    )
    return task_names().get(key, name)


def task_states(flow_state) -> dict[str, list[str]]:
    """Task name -> final state names of its runs, for one flow run (and its subflows)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    states: dict[str, list[str]] = {}
    for run in runs:
        states.setdefault(task_name(run), []).append(run.state.name)
    return states


def run_tree(api: str, root: str) -> tuple[list[dict], list[dict]]:
    """(subflow runs, task runs) of a flow run and of its subflows, from the REST API."""
    import httpx

    subflows = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"parent_flow_run_id": {"any_": [root]}}, "limit": 200},
        timeout=30,
    ).json()
    ids = [root, *(f["id"] for f in subflows)]
    tasks = httpx.post(
        f"{api}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": ids}}, "limit": 200},
        timeout=30,
    ).json()
    return subflows, tasks


# --- a judge on the loopback OpenAI server (conftest.py: loopback_openai) -----------------

GOOD = ("Action: calculator", "Action: chemistry", "Action: unit_converter")


def rubric(messages: list[dict]) -> str:
    """A judge that knows the calibration answers: 9 for a good step, 2 for a bad one."""
    return "9" if any(g in messages[-1]["content"] for g in GOOD) else "2"


def cli_cfg(tmp_path, server, *extra: str) -> list[str]:
    """`spark` arguments: the demo config with its judge on the loopback ``server``."""
    sets = [
        f"runtime.runs_dir={tmp_path / 'runs'}",
        "judge.backend=openai",
        "judge.name=loopback-judge",
        f"judge.base_url={server.base_url}",
        "judge.price_per_1k_prompt=0.0025",
        "judge.price_per_1k_completion=0.01",
        *extra,
    ]
    return ["-c", "configs/demo.yaml", *[a for s in sets for a in ("--set", s)]]
