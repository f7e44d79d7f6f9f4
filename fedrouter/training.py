"""One local training call with TRL's SFTTrainer, and the cosine learning rate over rounds."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from fedrouter.data.templates import get_template, prompt_through_marker
from fedrouter.models import keep_adapter_float32
from fedrouter.profiling import PHASES, phase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Per-call training settings, taken from the run config."""

    max_steps: int = 10
    num_train_epochs: int = 1
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    seq_length: int = 1024
    template: str = "alpaca"
    gradient_checkpointing: str = "auto"  # on | off | auto (see checkpointing_needed)
    gpu_share: float = 1.0  # the fraction of one GPU the client process gets

    @classmethod
    def from_config(cls, cfg) -> TrainSettings:
        """Take the training fields of a ``Config``."""
        return cls(
            max_steps=cfg.max_steps,
            num_train_epochs=cfg.num_train_epochs,
            batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            seq_length=cfg.seq_length,
            template=cfg.template,
            gradient_checkpointing=cfg.gradient_checkpointing,
            gpu_share=min(1.0, cfg.client_resources_gpus) or 1.0,
        )

    @property
    def samples_per_call(self) -> int:
        """Return how many samples one call consumes."""
        return self.batch_size * self.gradient_accumulation_steps * self.max_steps


@dataclass(frozen=True)
class TrainResult:
    """What one local training call reports."""

    loss: float
    num_examples: int
    seconds: float


def cosine_lr(server_round: int, num_rounds: int, lr: float, min_lr: float = 1e-5) -> float:
    """Return the learning rate of round ``server_round`` (1-based) of ``num_rounds``.

    As the reference's Flower path, which passes the 1-based round to its cosine: round 1
    already gets a little less than ``lr``, and the last round gets exactly ``min_lr``.
    """
    progress = server_round / max(num_rounds, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def tokenize_rows(rows: Sequence[dict], tokenizer, template: str, max_length: int) -> dict:
    """Tokenize rows for completion-only training, in one batched call.

    Each sequence is the template's training text, ``prompt + response + eos``, byte for
    byte. ``labels`` is -100 up to the end of the response marker, so the loss covers every
    token after it (the reference's completion-only collator does the same). Sequences are
    cut to ``max_length`` from the start, and one left with no response token is dropped,
    as TRL does. SFTTrainer's own preparation runs five ``datasets.map`` passes per call;
    this is one tokenizer call.
    """
    spec = get_template(template)
    eos = tokenizer.eos_token or ""
    heads = [prompt_through_marker(row["instruction"], template) for row in rows]
    fulls = [spec.training_text(row["instruction"], row["response"], eos) for row in rows]
    head_ids = tokenizer(heads)["input_ids"]
    full_ids = tokenizer(fulls)["input_ids"]
    input_ids, labels = [], []
    for head, full in zip(head_ids, full_ids, strict=True):
        start = _common_prefix(head, full)
        label = [-100] * start + full[start:]
        full, label = full[:max_length], label[:max_length]
        if any(token != -100 for token in label):
            input_ids.append(full)
            labels.append(label)
    return {"input_ids": input_ids, "labels": labels}


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


ACTIVATION_BYTES_PER_HIDDEN = 34  # per token, layer and hidden unit, 16-bit, no attention matrix


def activation_bytes(tokens: int, hidden_size: int, layers: int) -> int:
    """Estimate the activations a training batch of ``tokens`` keeps for backward.

    About 34 bytes per token, hidden unit and layer in 16-bit without recomputation
    (Korthikanti et al., 2022, leaving out the attention matrix, which SDPA never stores).
    """
    return tokens * hidden_size * layers * ACTIVATION_BYTES_PER_HIDDEN


def checkpointing_needed(
    mode: str, tokens: int, model_config, gpu_share: float, gpu_bytes: int | None = None
) -> bool:
    """Decide gradient checkpointing for a batch of ``tokens`` (batch size x padded length).

    ``on``/``off`` are taken as they are. ``auto`` is off on a CPU, where recomputation only
    costs time, and on a GPU on only when the batch's activations would exceed a fifth of the
    client's share of the card (``gpu_bytes``: the card's memory, read when not given).
    """
    if mode != "auto":
        return mode == "on"
    if gpu_bytes is None:
        import torch

        if not torch.cuda.is_available():
            return False
        gpu_bytes = torch.cuda.get_device_properties(0).total_memory
    need = activation_bytes(
        tokens, int(model_config.hidden_size), int(model_config.num_hidden_layers)
    )
    return need > 0.2 * gpu_bytes * gpu_share


def set_checkpointing(model, on: bool) -> None:
    """Turn gradient checkpointing on (non-reentrant: LoRA gets gradients) or off."""
    if on and not getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif not on and getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_disable()


def sft_config(
    settings: TrainSettings, lr: float, seed: int, output_dir: str, checkpointing: bool = False
):
    """Return an ``SFTConfig`` that fits the device: bf16 on a capable GPU, CPU otherwise.

    ``checkpointing`` follows the model, which decided it when it loaded
    (``fedrouter.models.checkpointing_needed``).
    """
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    return SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=lr,
        lr_scheduler_type="constant",  # the schedule runs over rounds, not inside one
        max_steps=settings.max_steps,
        num_train_epochs=settings.num_train_epochs,
        max_length=settings.seq_length,
        completion_only_loss=True,  # loss on the response tokens only
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        report_to="none",
        logging_steps=max(settings.max_steps, 1),
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        dataset_kwargs={"skip_prepare_dataset": True},  # train_adapter tokenizes (tokenize_rows)
    )


@lru_cache(maxsize=1)
def _sft_trainer_class():
    """Return SFTTrainer, or on CPU a subclass whose loss is plain cross-entropy.

    TRL computes the loss with a chunked log-prob kernel (plus entropy and accuracy
    metrics). It saves GPU memory on large vocabularies, but on a CPU it is about half of a
    training step. The subclass computes the same completion-only NLL with the model's own
    loss, so on CPU only the cost changes.
    """
    import torch
    from transformers import Trainer
    from trl import SFTTrainer

    if torch.cuda.is_available():
        return SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(
                self,
                model,
                inputs,
                return_outputs=return_outputs,
                num_items_in_batch=num_items_in_batch,
            )

    return PlainLossSFTTrainer


def _optimizer_timer():
    """Return a callback that adds the optimizer steps' time to the ``optimizer`` phase."""
    from transformers import TrainerCallback

    class OptimizerTimer(TrainerCallback):
        started = 0.0

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            PHASES["optimizer"] += time.perf_counter() - self.started

    return OptimizerTimer()


def train_adapter(
    model, tokenizer, rows: Sequence[dict], *, settings: TrainSettings, lr: float, seed: int
) -> TrainResult:
    """Train the model's active adapter on ``rows`` (this round's sample) for ``max_steps``."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers import PrinterCallback
    from transformers.utils import logging as hf_logging

    if not rows:
        raise ValueError("train_adapter needs at least one row")
    start = time.perf_counter()
    with phase("tokenization"):
        dataset = Dataset.from_dict(
            tokenize_rows(rows, tokenizer, settings.template, settings.seq_length)
        )
    disable_progress_bar()  # per-round dataset preparation is not worth a progress bar
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    longest = max((len(ids) for ids in dataset["input_ids"]), default=0)
    checkpointing = checkpointing_needed(
        settings.gradient_checkpointing,
        settings.batch_size * longest,
        model.config,
        settings.gpu_share,
    )
    set_checkpointing(model, checkpointing)
    try:
        with tempfile.TemporaryDirectory(prefix="fedrouter-sft-") as tmp:
            with phase("trainer-setup"):
                trainer = _sft_trainer_class()(
                    model=model,
                    args=sft_config(settings, lr, seed, tmp, checkpointing),
                    train_dataset=dataset,
                    processing_class=tokenizer,
                    callbacks=[_optimizer_timer()],
                )
                trainer.remove_callback(PrinterCallback)  # it prints metrics per log step
                keep_adapter_float32(model)  # undo TRL's bf16 cast before the optimizer exists
            with phase("training"):
                output = trainer.train()
    finally:
        hf_logging.set_verbosity(verbosity)
    model.eval()
    return TrainResult(
        loss=float(output.training_loss),
        num_examples=len(dataset),  # rows left with no response token after the cut drop out
        seconds=time.perf_counter() - start,
    )
