"""Batched greedy generation with whichever adapter is active, and ROUGE scoring."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from fedrouter.data.templates import extract_response, generation_prompt
from fedrouter.embeddings import length_order
from fedrouter.models import model_device

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    batch_size: int = 64,
    max_new_tokens: int = 32,
    max_length: int = 1024,
    stats: dict | None = None,
    adapter_names: Sequence[str] | None = None,
) -> list[str]:
    """Greedily complete each prompt (left padded, batched) and return the new text, unstripped.

    Prompts are batched in order of length, so a batch pads little. With ``adapter_names``
    (one per prompt), each row runs with its own PEFT adapter: one batch may mix adapters.
    If ``stats`` is given, the number of generated tokens is added to ``stats["new_tokens"]``.
    """
    import torch

    if len(prompts) == 0:
        return []
    encoded = tokenizer(list(prompts), truncation=True, max_length=max_length)["input_ids"]
    order = length_order([len(ids) for ids in encoded])
    device = model_device(model)
    outputs: list[str] = [""] * len(prompts)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = tokenizer.pad(
                    {"input_ids": [encoded[i] for i in idx]}, return_tensors="pt"
                ).to(device)
                mixed = (
                    {}
                    if adapter_names is None
                    else {"adapter_names": [adapter_names[i] for i in idx]}
                )
                generated = model.generate(
                    **batch,
                    **mixed,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                new_tokens = generated[:, batch["input_ids"].shape[1] :]
                if stats is not None:
                    produced = int((new_tokens != tokenizer.pad_token_id).sum())
                    stats["new_tokens"] = stats.get("new_tokens", 0) + produced
                texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for i, text in zip(idx, texts, strict=True):
                    outputs[i] = text
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return outputs


def generate_routed(
    model,
    tokenizer,
    instructions: Sequence[str],
    routes: Sequence[int],
    activate: Callable[[int], None],
    *,
    template: str,
    batch_size: int,
    max_new_tokens: int,
    max_length: int,
    prompt_end: str = "marker",
    seconds: dict[str, float] | None = None,
    stats: dict | None = None,
    load_slots: Callable[[Sequence[int]], dict[int, str]] | None = None,
) -> list[str]:
    """Answer each instruction with its routed cluster's adapter; return the answers in order.

    With ``load_slots(clusters)``, which loads each routed cluster's adapter into an adapter
    slot of its own and returns the slots' names, every instruction is generated in one pass
    of mixed-adapter batches. Without it, ``activate(g)`` swaps cluster g's adapter into the
    model in place, once per routed cluster, and each cluster's instructions are generated
    together. Both give the same greedy tokens. ``seconds`` gains the time spent in
    "adapter-swap" and "generation".
    """
    seconds = {} if seconds is None else seconds
    routes = np.asarray(routes)
    prompts = [generation_prompt(text, template, prompt_end) for text in instructions]
    kwargs = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, max_length=max_length)
    if load_slots is not None:
        start = time.perf_counter()
        names = load_slots([int(g) for g in np.unique(routes)])
        seconds["adapter-swap"] = seconds.get("adapter-swap", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        slots = [names[int(g)] for g in routes]
        outputs = generate(model, tokenizer, prompts, stats=stats, adapter_names=slots, **kwargs)
        seconds["generation"] = seconds.get("generation", 0.0) + time.perf_counter() - start
        return [
            extract_response(prompt, text, template)
            for prompt, text in zip(prompts, outputs, strict=True)
        ]
    answers = [""] * len(instructions)
    for cluster in np.unique(routes):
        idx = np.flatnonzero(routes == cluster)
        start = time.perf_counter()
        activate(int(cluster))
        seconds["adapter-swap"] = seconds.get("adapter-swap", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        outputs = generate(model, tokenizer, [prompts[i] for i in idx], stats=stats, **kwargs)
        seconds["generation"] = seconds.get("generation", 0.0) + time.perf_counter() - start
        for i, text in zip(idx, outputs, strict=True):
            answers[i] = extract_response(prompts[i], text, template)
    return answers


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    # As the reference's `evaluate.load("rouge")`: rouge-score without stemming.
    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=False)


def rouge_per_sample(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Return an (n, 3) array of ROUGE-1/2/L F-measures."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    scorer = _scorer()
    scores = np.zeros((len(predictions), len(ROUGE_KEYS)), dtype=np.float64)
    for row, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        result = scorer.score(ref, pred)
        scores[row] = [result[key].fmeasure for key in ROUGE_KEYS]
    return scores


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Return the mean ROUGE-1/2/L F-measures of the predictions."""
    scores = rouge_per_sample(predictions, references)
    means = scores.mean(0) if len(scores) else np.zeros(len(ROUGE_KEYS))
    return {key: float(value) for key, value in zip(ROUGE_KEYS, means, strict=True)}
