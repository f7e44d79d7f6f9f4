"""Build the tiny offline base model: a locally trained tokenizer and a random-init Llama.

The tests and the quickstart run on this model, so the project never needs the Hugging Face
Hub. The result is a standard Hugging Face directory that ``AutoModelForCausalLM`` and
``AutoTokenizer`` reload, and it is deterministic from its seed.

    python -m fedrouter.tiny_model OUT_DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from fedrouter.atomic import atomic_folder

logger = logging.getLogger(__name__)

TINY_MODEL_NAME = "tiny"  # the value of model_name_or_path that resolves to the cached build
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


@dataclass(frozen=True)
class TinyModelSpec:
    """Geometry of the tiny Llama; small enough for CPU tests, big enough to learn the tasks."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256  # a multiple of 64 so every Linear4bit quantizes in whole blocks
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 1024
    # Only LoRA trains, and the frozen LM head bounds the logits by |h| * |w|: with Llama's
    # usual 0.02 the best token can never get much probability, and learning stalls.
    # 0.1 learned the synthetic tasks fastest of 0.02, 0.1 and 0.2 (scripts/task_learnability.py).
    initializer_range: float = 0.1
    # Bump when the tokenizer corpus (synthetic benchmark, templates) changes: it names the cache.
    corpus: str = "synthetic-v2"  # v2: raw instructions and the reference's alpaca template
    seed: int = 0

    def fingerprint(self) -> str:
        """Return a short hash naming this build in the cache."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def cache_root() -> Path:
    """Return the folder where built tiny models are cached."""
    env = os.environ.get("FEDROUTER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedrouter"


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Sorted input makes the merges independent of any upstream iteration order.
    core.train_from_iterator(sorted(set(texts)), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=1024,
    )


def tokenizer_corpus() -> list[str]:
    """Return the texts the tiny tokenizer learns from: benchmark, task sentences, templates."""
    from fedrouter.data.synthetic import SYNTHETIC_PHRASING, synthetic_texts
    from fedrouter.data.templates import TEMPLATE_NAMES, format_prompt

    templates = [format_prompt("", name) for name in TEMPLATE_NAMES]
    return synthetic_texts() + list(SYNTHETIC_PHRASING.values()) + templates


def build_tiny_model(out_dir: str | os.PathLike, spec: TinyModelSpec | None = None) -> Path:
    """Write a tokenizer and a random-init Llama to ``out_dir`` atomically and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(tokenizer_corpus(), spec.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    save_model_atomically(model, tokenizer, out, {"fedrouter_tiny_spec.json": asdict(spec)})
    logger.info("built tiny model (%d parameters) in %s", model.num_parameters(), out)
    return out


def save_model_atomically(model, tokenizer, out: Path, extra_json: dict[str, dict]) -> None:
    """Save model and tokenizer to ``out`` via a sibling temp dir, so a crash leaves nothing."""
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if out.exists() and not (out / "config.json").exists():
        shutil.rmtree(out)  # a leftover that never completed
    # Another process that finished the same deterministic build first keeps its folder.
    with atomic_folder(out, replace=False) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, content in extra_json.items():
            (tmp / name).write_text(json.dumps(content, indent=2))


def resolve_tiny_model(spec: TinyModelSpec | None = None) -> Path:
    """Return the cached tiny model directory, building it on first use."""
    spec = spec or TinyModelSpec()
    path = cache_root() / f"tiny-llama-{spec.fingerprint()}"
    if not (path / "config.json").exists():
        build_tiny_model(path, spec)
    return path


# Llama-3.2-1B's published geometry, so that time and memory can be measured at GPU scale
# without downloading the weights (they are random here).
GEOMETRIES: dict[str, dict] = {
    "llama-3.2-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
    }
}
_GEOMETRY_KEYS = set(GEOMETRIES["llama-3.2-1b"]) | {"initializer_range", "attention_bias"}


def geometry_sizes(geometry: str, num_layers: int | None = None) -> dict:
    """Return the Llama sizes of a named geometry or of a config JSON file, layers overridden.

    Keys of the JSON that are not sizes (architectures, dtype, token ids...) are ignored.
    """
    if geometry in GEOMETRIES:
        sizes = dict(GEOMETRIES[geometry])
    elif Path(geometry).is_file():
        loaded = json.loads(Path(geometry).read_text())
        sizes = {k: v for k, v in loaded.items() if k in _GEOMETRY_KEYS}
        if "hidden_size" not in sizes or "num_hidden_layers" not in sizes:
            raise ValueError(f"{geometry}: not a Llama config (no hidden_size/num_hidden_layers)")
    else:
        raise ValueError(
            f"unknown model geometry '{geometry}': use one of {sorted(GEOMETRIES)} "
            "or the path of a config JSON"
        )
    if num_layers is not None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, not {num_layers}")
        sizes["num_hidden_layers"] = num_layers
    return sizes


def resolve_random_model(sizes: dict, seed: int = 0) -> Path:
    """Return a cached random-init Llama with ``sizes`` (bf16 weights), building it once.

    It uses the tiny model's tokenizer; the token ids it produces all fit the larger vocab.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    blob = json.dumps({"sizes": sizes, "seed": seed, "tok": TinyModelSpec().fingerprint()})
    out = cache_root() / f"random-llama-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(resolve_tiny_model())
    if sizes.get("vocab_size", 0) < len(tokenizer):
        raise ValueError(f"vocab_size must be at least {len(tokenizer)}")
    config = LlamaConfig(
        **sizes,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    with torch.device("cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    save_model_atomically(model, tokenizer, out, {"fedrouter_random_sizes.json": sizes})
    logger.info("built random %d-parameter Llama in %s", model.num_parameters(), out)
    return out


def main(argv: list[str] | None = None) -> None:
    """Build the tiny model into the folder given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write the model and tokenizer to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random init")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} exists and is not empty; choose a new folder")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_tiny_model(args.out_dir, TinyModelSpec(seed=args.seed))


if __name__ == "__main__":
    main()
