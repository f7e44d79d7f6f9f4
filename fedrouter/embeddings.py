"""Embed texts with a given model: the masked mean of the base model's last hidden state."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from fedrouter.models import model_device


def _backbone(model):
    """Return the decoder stack that yields hidden states without the LM head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder() if hasattr(base, "get_decoder") else base


def _adapters_off(model):
    """Return a context that bypasses LoRA, so embeddings never depend on the adapter."""
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def length_order(lengths: Sequence[int]) -> np.ndarray:
    """Return indices sorting items by length, longest first, so batches pad little."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def embed_texts(
    model, tokenizer, texts: Sequence[str], *, batch_size: int = 64, max_length: int = 512
) -> np.ndarray:
    """Return a float32 array (len(texts), hidden) of masked-mean last hidden states."""
    import torch

    if len(texts) == 0:
        raise ValueError("embed_texts needs at least one text")
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    order = length_order([len(ids) for ids in encoded])
    backbone = _backbone(model)
    device = model_device(model)
    out: np.ndarray | None = None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _adapters_off(model):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = tokenizer.pad(
                    {"input_ids": [encoded[i] for i in idx]}, return_tensors="pt"
                ).to(device)
                hidden = backbone(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                if out is None:
                    out = np.empty((len(texts), pooled.shape[-1]), dtype=np.float32)
                out[idx] = pooled.cpu().numpy()
    finally:
        model.train(was_training)
    return out
