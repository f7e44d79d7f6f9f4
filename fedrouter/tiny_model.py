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
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

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
    corpus: str = "synthetic-v1"
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
    """Return the texts the tiny tokenizer learns from: the benchmark and the templates."""
    from fedrouter.data.synthetic import synthetic_texts
    from fedrouter.data.templates import TEMPLATE_NAMES, format_prompt

    return synthetic_texts() + [format_prompt("", name) for name in TEMPLATE_NAMES]


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
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # Build in a sibling temp dir, then rename: a crash never leaves a half-written model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "fedrouter_tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2))
        if out.exists() and not (out / "config.json").exists():
            shutil.rmtree(out)  # a leftover that never completed
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / "config.json").exists():
                raise
            # Another process finished the same deterministic build first: keep theirs.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built tiny model (%d parameters) in %s", model.num_parameters(), out)
    return out


def resolve_tiny_model(spec: TinyModelSpec | None = None) -> Path:
    """Return the cached tiny model directory, building it on first use."""
    spec = spec or TinyModelSpec()
    path = cache_root() / f"tiny-llama-{spec.fingerprint()}"
    if not (path / "config.json").exists():
        build_tiny_model(path, spec)
    return path


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
