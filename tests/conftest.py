"""Shared fixtures: an isolated cache holding the tiny offline model, built once per session."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory):
    """Keep tests offline and give them a private model cache (unless one is provided)."""
    os.environ.setdefault("FEDROUTER_CACHE", str(tmp_path_factory.mktemp("fedrouter-cache")))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    yield


@pytest.fixture(scope="session")
def tiny_path(offline_env):
    """Return the folder of the tiny model, building it on first use."""
    from fedrouter.tiny_model import resolve_tiny_model

    return str(resolve_tiny_model())


@pytest.fixture(scope="session")
def qlora_model(tiny_path):
    """Return (model, tokenizer, initial adapter arrays) of the 4-bit tiny model with LoRA."""
    from fedrouter.models import ModelSpec, adapter_to_arrays, load_model_and_tokenizer

    spec = ModelSpec(tiny_path, load_in_4bit=True, lora_r=16, lora_alpha=32, seed=0)
    model, tokenizer = load_model_and_tokenizer(spec)
    return model, tokenizer, adapter_to_arrays(model)


@pytest.fixture()
def fresh_qlora(qlora_model):
    """Return the shared model with its adapter reset to the initial arrays."""
    from fedrouter.models import arrays_to_adapter

    model, tokenizer, init = qlora_model
    arrays_to_adapter(model, init)
    return model, tokenizer, init
