"""Tiny language models built at test time: a word-level tokenizer with a chat template and a
randomly initialised Llama (or GPT-2, a different architecture: learned positions, Conv1D layers),
saved to a folder like any Hugging Face model."""

from pathlib import Path

from dialog_env.nlg import AGENT_TEMPLATES, USER_TEMPLATES
from dialog_env.world import load_world

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<|unk|>"]


def corpus() -> list[str]:
    world = load_world()
    lines = [t for group in (*AGENT_TEMPLATES.values(), *USER_TEMPLATES.values()) for t in group]
    lines += [q for s in world.slots for q in s.questions]
    lines += [f"{v.fact}. {v.you}. {v.short}" for v in world.values]
    lines += [f"How about {it.name}?" for it in world.items]
    lines += ["system user assistant Catalog What you know Already rejected"]
    return lines


def build_tiny_lm(folder: Path, hidden: int = 32, layers: int = 2, arch: str = "llama") -> Path:
    """Write a tiny random causal LM (``llama`` or ``gpt2``) and its tokenizer to ``folder``; returns the folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus(), trainers.WordLevelTrainer(special_tokens=SPECIAL))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(fast),
                n_embd=hidden,
                n_layer=layers,
                n_head=2,
                n_positions=4096,
                pad_token_id=fast.pad_token_id,
                bos_token_id=fast.bos_token_id,
                eos_token_id=fast.eos_token_id,
            )
        )
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        fast.save_pretrained(folder)
        return folder
    if arch != "llama":
        raise ValueError(f"arch must be llama or gpt2, got {arch!r}")
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
