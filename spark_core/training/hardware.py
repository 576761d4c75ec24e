"""The policy to train: LoRA on CPU, QLoRA (4-bit NF4, bitsandbytes) + bf16 on CUDA — chosen
by ``training.quantization`` and what the machine can do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from spark_core.config import LoraSettings, TrainingConfig


@dataclass(frozen=True)
class Precision:
    device: str
    quantization: str  # "none" | "4bit"
    bf16: bool

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float32


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def choose_precision(cfg: TrainingConfig) -> Precision:
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    quant = cfg.quantization
    if quant == "auto":
        quant = "4bit" if cuda and bitsandbytes_available() else "none"
    if quant == "4bit" and not cuda:
        raise ValueError(
            "training.quantization=4bit (QLoRA) needs a CUDA GPU; use 'none' or 'auto'"
        )
    if quant == "4bit" and not bitsandbytes_available():
        raise ValueError("training.quantization=4bit needs bitsandbytes: pip install '.[gpu]'")
    return Precision("cuda" if cuda else "cpu", quant, bf16)


def lora_config(lora: LoraSettings, dropout: float | None = None):
    """peft's ``LoraConfig`` of ``training.lora`` on every linear layer."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout if dropout is None else dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def load_base(path: str, precision: Precision) -> Any:
    """The base model, quantised to 4-bit NF4 for QLoRA when asked."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": precision.dtype}
    if precision.quantization == "4bit":
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=precision.dtype,
        )
        import os

        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        return prepare_model_for_kbit_training(model)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model.to(precision.device)
