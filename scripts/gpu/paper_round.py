"""One paper-setting client round on a GPU, in one process, with the project's building blocks.

Model: a random-init Llama with Llama-3.2-1B's geometry (all 16 layers), built by the project.
Settings: the project's defaults, which are the reference's (batch 16, 10 steps, seq 1024,
r8/a16 on PEFT's default modules, q_proj/v_proj on Llama, lr 5e-4, eval batch 128, 512 new
tokens, 600 rows per client, alpaca template). For 4-bit (QLoRA, the paper's) and bf16 LoRA:
embed and k-means one client's training instructions, three training calls, one routed
evaluation; times, tokens/s, peak memory, and whether the adapter moved. Then the benchmark's
in-process A/Bs (swap against reload, per-swap times, a warm training call). Writes
``$OUT/gpu_round.json`` (default /tmp) as it goes, so a cut-short call still returns figures.

    python scripts/gpu/paper_round.py [geometry|config.json] [layers]

Environment: LORA_TARGETS (a comma list, or all-linear), MAX_NEW_TOKENS, MAX_EVAL_SIZE,
MODES (qlora-4bit,lora-bf16), QUICK=1 (a small CPU smoke test of the script itself).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np
import torch

OUT = os.environ.get("OUT", "/tmp")
RESULT: dict = {"errors": []}
MODES = {"qlora-4bit": True, "lora-bf16": False}


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def save() -> None:
    with open(os.path.join(OUT, "gpu_round.json"), "w") as handle:
        json.dump(RESULT, handle, indent=1, default=str)


def step(name: str, fn):
    """Run one measured step; record its seconds, or its error, and go on either way."""
    start = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # one device call must bring back every figure it reached
        RESULT["errors"].append({"step": name, "error": repr(exc), "tb": traceback.format_exc()})
        say(f"[{name}] FAILED: {exc!r}\n{traceback.format_exc()}")
        save()
        return None
    sync()
    seconds = time.perf_counter() - start
    RESULT.setdefault("seconds", {})[name] = round(seconds, 3)
    say(f"[{name}] {seconds:.2f}s")
    return out


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cuda_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def build_config(path: str, quick: bool):
    from fedrouter.config import Config

    cfg = Config(
        model_name_or_path=path,
        dataset_name="multitask_synthetic",
        client_resources_gpus=0.0,
        output_dir="/tmp/fr-out",
    )
    if os.environ.get("LORA_TARGETS"):
        cfg = cfg.replace(lora_target_modules=tuple(os.environ["LORA_TARGETS"].split(",")))
    for var, field in (("MAX_NEW_TOKENS", "max_new_tokens"), ("MAX_EVAL_SIZE", "max_eval_size")):
        if os.environ.get(var):
            cfg = cfg.replace(**{field: int(os.environ[var])})
    if quick:
        cfg = cfg.replace(
            max_steps=2, max_data_per_client=60, max_eval_size=8, eval_batch_size=8,
            max_new_tokens=4, seq_length=128,
        )  # fmt: skip
    return cfg


def measure_mode(mode: str, cfg, client) -> dict:
    """Load the model of one mode and time one client's round with it."""
    from fedrouter.client_logic import cluster_locally, embed_instructions, evaluate_routed
    from fedrouter.models import (
        LOAD_STATS,
        ModelSpec,
        adapter_to_arrays,
        clear_model_cache,
        get_model_and_tokenizer,
    )
    from fedrouter.training import TrainSettings, train_adapter

    res: dict = {}
    clear_model_cache()
    cuda_reset()
    spec = ModelSpec.from_config(cfg.replace(load_in_4bit=MODES[mode]))
    loaded = step(f"{mode}/load", lambda: get_model_and_tokenizer(spec))
    if loaded is None:
        return res
    model, tokenizer = loaded
    res["load_seconds"] = LOAD_STATS["seconds"]
    res["params_total"] = sum(p.numel() for p in model.parameters())
    res["params_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    res["mem_after_load_mb"] = peak_mb()
    emb = step(
        f"{mode}/embed",
        lambda: embed_instructions(
            model, tokenizer, client.train, batch_size=cfg.eval_batch_size,
            max_length=cfg.seq_length,
        ),
    )  # fmt: skip
    if emb is not None:
        res["embed_rows"] = len(emb)
        tasks = [r["task"] for r in client.train]
        local = step(f"{mode}/kmeans", lambda: cluster_locally(emb, tasks, 1, cfg.seed))
        res["local_tasks"] = local.tasks if local is not None else None
    settings = TrainSettings.from_config(cfg)
    before = adapter_to_arrays(model)
    losses, seconds = [], []
    for call in range(3):
        start = time.perf_counter()
        out = step(
            f"{mode}/train{call}",
            lambda call=call: train_adapter(
                model, tokenizer, client.train, settings=settings, lr=cfg.learning_rate,
                seed=cfg.seed + call,
            ),
        )  # fmt: skip
        if out is None:
            break
        seconds.append(time.perf_counter() - start)
        losses.append(out.loss)
    after = adapter_to_arrays(model)
    res.update(train_seconds=seconds, train_losses=losses)
    res["gradient_checkpointing"] = bool(getattr(model, "is_gradient_checkpointing", False))
    res["lora_b_all_moved"] = all(
        float(np.abs(after[k] - before[k]).max()) > 0 for k in before if "lora_B" in k
    )
    res["adapter_dtypes"] = sorted({str(a.dtype) for a in after.values()})
    res["peak_mem_train_mb"] = peak_mb()
    cuda_reset()
    routes = np.zeros(len(client.test), dtype=np.int64)
    ev = step(
        f"{mode}/evaluate",
        lambda: evaluate_routed(
            model, tokenizer, client.test, routes, lambda g: None,
            cluster_tasks=[client.tasks[0]], template=cfg.template,
            batch_size=cfg.eval_batch_size, max_new_tokens=cfg.max_new_tokens,
            max_length=cfg.seq_length,
        ),
    )  # fmt: skip
    if ev is not None:
        metrics = ev.metrics()
        res["eval"] = {k: v for k, v in metrics.items() if "/c" not in k}
        generation = ev.seconds["generation"]
        res["gen_tokens_per_s"] = ev.new_tokens / generation if generation else None
    res["peak_mem_eval_mb"] = peak_mb()
    return res


def main() -> None:
    geometry = sys.argv[1] if len(sys.argv) > 1 else "llama-3.2-1b"
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else None
    quick = os.environ.get("QUICK") == "1"
    from fedrouter.bench import ab_measurements
    from fedrouter.data import client_data_for
    from fedrouter.models import clear_model_cache
    from fedrouter.tiny_model import geometry_sizes, resolve_random_model

    RESULT["env"] = {
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    for name in ("transformers", "peft", "trl", "bitsandbytes", "datasets"):
        try:
            RESULT["env"][name] = __import__(name).__version__
        except ImportError as exc:
            RESULT["env"][name] = repr(exc)
    say(json.dumps(RESULT["env"]))
    sizes = geometry_sizes(geometry, layers)
    path = step("build-model", lambda: resolve_random_model(sizes))
    if path is None:
        return
    cfg = build_config(str(path), quick)
    keys = (
        "batch_size", "max_steps", "seq_length", "peft_lora_r", "peft_lora_alpha",
        "learning_rate", "eval_batch_size", "max_new_tokens", "max_data_per_client",
        "max_eval_size", "template", "lora_target_modules", "gradient_checkpointing",
    )  # fmt: skip
    RESULT["config"] = {k: getattr(cfg, k) for k in keys}
    data = step("data", lambda: client_data_for(cfg))
    if data is None:
        return
    client = data[0]
    RESULT["client_rows"] = {"train": len(client.train), "test": len(client.test)}
    for mode in os.environ.get("MODES", ",".join(MODES)).split(","):
        RESULT[mode] = measure_mode(mode, cfg, client)
        save()
    clear_model_cache()
    cuda_reset()
    RESULT["ab_4bit"] = step("ab-4bit", lambda: ab_measurements(cfg, 16 if quick else 64, 4))
    RESULT["ab_4bit_peak_mb"] = peak_mb()


if __name__ == "__main__":
    main()
    save()
    say(json.dumps({k: v for k, v in RESULT.items() if k != "errors"}, indent=1, default=str))
    say(f"errors: {len(RESULT['errors'])}")
