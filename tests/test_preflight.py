"""Tests for fedrouter.preflight: checks that fail before any model loads."""

from __future__ import annotations

import pytest
import torch

from fedrouter.config import Config
from fedrouter.errors import FedRouterError
from fedrouter.preflight import check_resources


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_more_cpus_than_the_machine_has_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(FedRouterError, match=r"client_resources_cpus=4 .* 2 CPU core"):
        check_resources(Config(client_resources_cpus=4, client_resources_gpus=0))
    check_resources(Config(client_resources_cpus=2, client_resources_gpus=0))


def test_more_gpus_than_visible_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 1)
    with pytest.raises(FedRouterError, match=r"client_resources_gpus=2 .* 1 visible GPU"):
        check_resources(Config(client_resources_cpus=1, client_resources_gpus=2))
    check_resources(Config(client_resources_cpus=1, client_resources_gpus=1))
    check_resources(Config(client_resources_cpus=1, client_resources_gpus=0.5))


def test_a_server_that_hosts_no_clients_does_not_check_client_resources(
    monkeypatch: pytest.MonkeyPatch, tmp_path, tiny_path
) -> None:
    from fedrouter.preflight import preflight

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    cfg = Config(
        client_resources_cpus=64,
        client_resources_gpus=0,
        model_name_or_path="tiny",
        dataset_name="multitask_synthetic",
        num_clients=4,
        sample_clients=4,
        output_dir=str(tmp_path),
        template="alpaca_short",
        seq_length=256,
    )
    with pytest.raises(FedRouterError, match="client_resources_cpus"):
        preflight(cfg)
    resolved, _ = preflight(cfg, hosts_clients=False)  # a ServerApp under `flwr run`
    assert resolved.lora_target_modules == ("q_proj", "v_proj")


def test_gpus_without_cuda_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 0)
    with pytest.raises(FedRouterError, match="no CUDA device"):
        check_resources(Config(client_resources_gpus=0.5))


def test_lora_target_naming_no_module_fails_before_weights_load(tiny_path) -> None:
    from fedrouter.models import LOAD_STATS, ModelLoadError
    from fedrouter.preflight import check_lora_targets

    loads = LOAD_STATS["count"]
    cfg = Config(model_name_or_path="tiny", lora_target_modules=("q_proj", "nope_proj"))
    with pytest.raises(ModelLoadError, match=r"nope_proj; its linear modules are .*v_proj"):
        check_lora_targets(cfg, tiny_path)
    check_lora_targets(cfg.replace(lora_target_modules=("q_proj", "v_proj")), tiny_path)
    assert LOAD_STATS["count"] == loads  # no model was loaded


def test_seq_length_keeping_no_training_row_names_the_shortest_prompt(tiny_path) -> None:
    from fedrouter.data import ClientData
    from fedrouter.preflight import check_seq_length

    rows = [{"instruction": "word " * n, "response": "yes", "task": "t"} for n in (5, 20)]
    part = ClientData(train=rows, test=[], tasks=("t",))
    with pytest.raises(
        FedRouterError, match=r"seq_length=16 keeps none of client 0's 2 .* is \d+ tokens"
    ):
        check_seq_length(Config(seq_length=16), tiny_path, [part])
    check_seq_length(Config(seq_length=512), tiny_path, [part])
