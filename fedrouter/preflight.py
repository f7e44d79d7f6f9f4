"""Checks that need no model weights, run before any model loads (config errors come earlier)."""

from __future__ import annotations

import os

from fedrouter.config import PEFT_DEFAULT_TARGETS, Config
from fedrouter.errors import FedRouterError
from fedrouter.results import check_writable


def check_resources(cfg: Config) -> None:
    """Refuse client resources the machine cannot give, instead of letting Ray wait forever."""
    import torch

    cores = os.cpu_count() or 1
    if cfg.client_resources_cpus > cores:
        raise FedRouterError(
            f"client_resources_cpus={cfg.client_resources_cpus:g} but this machine has {cores} "
            f"CPU core(s); no client could be placed (set client_resources_cpus <= {cores})"
        )
    if cfg.client_resources_gpus > 0 and not torch.cuda.is_available():
        raise FedRouterError(
            f"client_resources_gpus={cfg.client_resources_gpus:g} but no CUDA device is visible; "
            "set client_resources_gpus=0 to run on the CPU"
        )
    gpus = torch.cuda.device_count() if cfg.client_resources_gpus > 0 else 0
    if cfg.client_resources_gpus > gpus:
        raise FedRouterError(
            f"client_resources_gpus={cfg.client_resources_gpus:g} but this machine has {gpus} "
            f"visible GPU(s); no client could be placed (set client_resources_gpus <= {gpus})"
        )


def check_model(cfg: Config) -> tuple[str, str]:
    """Resolve the base model path and check that its config loads, without loading weights.

    Return the path and the model type (e.g. ``llama``).
    """
    from transformers import AutoConfig

    from fedrouter.model_sources import ModelLoadError, check_source, resolve_model_path

    check_source(cfg.model_name_or_path)
    path = resolve_model_path(cfg.model_name_or_path)
    try:
        model_config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load model '{cfg.model_name_or_path}': {str(exc).splitlines()[0]} "
            "(offline? pass a local folder, or --model_name_or_path tiny)"
        ) from exc
    return path, model_config.model_type


def check_lora_targets(cfg: Config, path: str) -> None:
    """Check named LoRA targets against the model's modules, built on the meta device."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from fedrouter.models import check_lora_targets as check_model_targets
    from fedrouter.models import peft_target_modules

    if not isinstance(peft_target_modules(cfg.lora_target_modules), list):
        return  # PEFT's default or all-linear: resolved for whatever the model is
    with init_empty_weights():  # the layout only: no weights are read or allocated
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    check_model_targets(skeleton, cfg.lora_target_modules)


def resolve_lora_targets(cfg: Config, model_type: str) -> Config:
    """Return the config with ``peft-default`` replaced by the modules PEFT wraps for the model.

    So config.json, resume and the saved adapters name the modules that were wrapped.
    """
    from fedrouter.models import default_lora_targets

    if cfg.lora_target_modules != (PEFT_DEFAULT_TARGETS,):
        return cfg
    return cfg.replace(lora_target_modules=default_lora_targets(model_type))


def check_data(cfg: Config) -> list:
    """Load and partition the data once, so bad data fails before any model loads.

    Return the clients' data.
    """
    from fedrouter.data import client_data_for

    parts = client_data_for(cfg)
    for pid, part in enumerate(parts):
        if cfg.n_clusters > len(part.train):
            raise FedRouterError(
                f"n_clusters={cfg.n_clusters} is larger than client {pid}'s "
                f"{len(part.train)} training samples"
            )
    return parts


def check_seq_length(cfg: Config, path: str, parts: list) -> None:
    """Refuse a seq_length that leaves a client no training row, with the tokenizer only.

    Training cuts each sequence to seq_length and drops one with no response token left, so a
    prompt (through the response marker) of seq_length tokens or more is never trained on.
    """
    from fedrouter.data.templates import prompt_through_marker
    from fedrouter.models import load_tokenizer
    from fedrouter.training import tokenize_rows

    tokenizer = load_tokenizer(path)
    for pid, part in enumerate(parts):
        kept = tokenize_rows(part.train, tokenizer, cfg.template, cfg.seq_length)["input_ids"]
        if part.train and not kept:
            heads = [prompt_through_marker(row["instruction"], cfg.template) for row in part.train]
            shortest = min(len(ids) for ids in tokenizer(heads)["input_ids"])
            raise FedRouterError(
                f"seq_length={cfg.seq_length} keeps none of client {pid}'s {len(part.train)} "
                f"training rows: its shortest prompt (through the response marker) is "
                f"{shortest} tokens; raise seq_length above that"
            )


def preflight(cfg: Config, *, hosts_clients: bool = True) -> tuple[Config, str]:
    """Run every check that needs no model weights.

    ``hosts_clients=False`` (a ServerApp under ``flwr run``) skips the client-resource check:
    there the SuperNodes, not this machine, run the clients. Return the config with its LoRA
    modules resolved, and the base model's path.
    """
    check_writable(cfg.output_dir)
    if hosts_clients:
        check_resources(cfg)
    parts = check_data(cfg)
    path, model_type = check_model(cfg)
    check_seq_length(cfg, path, parts)
    check_lora_targets(cfg, path)
    cfg = resolve_lora_targets(cfg, model_type)
    return cfg, path
