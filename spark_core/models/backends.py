"""The backend a model config names: local transformers (``hf``) or an OpenAI-compatible
server (``openai``)."""

from __future__ import annotations

from spark_core.config import ModelConfig


def make_backend(cfg: ModelConfig):
    if cfg.backend == "openai":
        from spark_core.models.openai.backend import OpenAIBackend

        return OpenAIBackend(
            cfg.name, cfg.base_url, cfg.api_key_env, cfg.concurrency, cfg.timeout_s, cfg.max_retries
        )
    from spark_core.models.hf.backend import HFBackend

    return HFBackend(cfg.name, cfg.device, cfg.dtype, cfg.batch_size)
