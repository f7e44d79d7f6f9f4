"""Shared settings, helpers and fixtures: the tiny run's flags, and an isolated cache holding
the tiny offline model, built once per session."""

import os
import subprocess
import sys

import pytest

# A small run of the simulation CLI: 4 clients x 2 rounds on the 4-bit tiny model.
SMALL_RUN = [
    "--model_name_or_path", "tiny",
    "--dataset_name", "multitask_synthetic",
    "--num_clients", "4",
    "--sample_clients", "4",
    "--global_n_clusters", "4",
    "--n_clusters", "1",
    "--split_strategy", "multitask_clusters",
    "--num_rounds", "2",
    "--evaluation_rounds", "1,2",
    "--max_steps", "3",
    "--batch_size", "4",
    "--seq_length", "128",
    "--template", "alpaca_short",
    "--max_data_per_client", "40",
    "--max_eval_size", "8",
    "--max_new_tokens", "8",
    "--eval_batch_size", "8",
    "--peft_lora_r", "8",
    "--client_resources_gpus", "0",
    "--load_in_4bit", "True",
    "--seed", "111",
]  # fmt: skip


def run_simulation(tmp_path, *extra):
    """Run the simulation CLI in a subprocess and return (completed process, run dir)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fedrouter.simulation", *SMALL_RUN, "--output_dir", str(out)]
    proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=900)
    runs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
    return proc, (runs[0] if len(runs) == 1 else None)


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


@pytest.fixture()
def flower_server_identity():
    """Give messages built outside a Flower runtime the identity a ServerApp's runtime sets.

    A Message built with a destination takes its run and source node from TaskIdentity, which
    Flower's runtimes set, through its public setters, before they run an app. A strategy
    called directly in a test needs the same; the previous values come back afterwards.
    """
    from flwr.supercore.task_identity import TaskIdentity

    names = ("run_id", "node_id", "task_id")
    before = {}
    for name in names:
        try:
            before[name] = getattr(TaskIdentity, name)
        except RuntimeError:  # not set: its getter refuses
            before[name] = None
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    yield
    for name, value in before.items():
        setattr(TaskIdentity, name, value)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, tiny_path):
    """One small FedRouter run (SMALL_RUN), shared by every test that reads a finished run."""
    proc, run_dir = run_simulation(tmp_path_factory.mktemp("sim"), "--sim_alias", "e2e")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, run_dir
