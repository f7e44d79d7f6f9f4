"""The benchmark: a real 1-round run whose JSON carries every figure, and its parts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedrouter import bench
from fedrouter.profiling import PHASES, content_bytes, messages_bytes, phase, take_phases
from fedrouter.protocol import to_record


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory, tiny_path):
    out = tmp_path_factory.mktemp("bench")
    argv = ["--rounds", "1", "--clients", "4", "--set", "max_steps=3", "--ab-prompts", "8"]
    argv += ["--out", str(out / "bench.json"), "--workdir", str(out / "runs")]
    bench.main(argv)
    return json.loads((out / "bench.json").read_text())


def test_bench_json_has_every_figure(bench_result):
    run = bench_result["run"]
    assert bench_result["machine"]["cpu_cores"] >= 1
    for key in ("startup_seconds", "wall_seconds", "compute_fraction", "slots"):
        assert isinstance(run[key], (int, float)), key
    assert 0 < run["compute_fraction"] <= 1
    assert run["startup_seconds"] > 0 and run["wall_seconds"] > run["startup_seconds"]
    # every phase the issue names was timed in this run
    for name in (
        "data_load",
        "embedding",
        "kmeans",
        "training",
        "optimizer",
        "tokenization",
        "trainer_setup",
        "adapter_swap",
        "serialization",
        "server/serialization",
        "server/aggregation",
        "eval_embedding",
        "routing",
        "generation",
        "rouge",
        "server/file_io",
    ):
        assert run["phases"].get(name, 0) > 0, name
    assert run["phases"]["optimizer"] < run["phases"]["training"]
    assert 0 < run["optimizer_share_of_training"] < 1
    assert run["generated_tokens"] > 0 and run["generation_tokens_per_second"] > 0
    assert set(run["rows"]) == {label for label, _ in bench.ROWS}
    # one base-model load per worker process, each timed
    loads = run["model_loads"]
    assert set(loads["per_process"].values()) == {1}
    assert loads["count"] == loads["processes"] >= 1 and loads["seconds"] > 0
    # a training round carries one adapter per message each way, and little else
    traffic = run["traffic"]
    assert traffic["adapter_bytes"] > 0
    for direction in ("to_clients", "from_clients"):
        assert traffic[f"messages_per_round_{direction}"] == 4
        assert 1.0 <= traffic[f"ratio_to_adapter_x_messages_{direction}"] < 1.1
    assert traffic["eval_bytes_per_round_to_clients"] > traffic["eval_bytes_per_round_from_clients"]
    assert run["peak_rss_mb"]["clients"] > 100 and run["peak_rss_mb"]["server"] > 100
    assert "peak_gpu_mb" in run
    ab = bench_result["ab"]
    assert ab["seconds_per_model_load"] > 0 and ab["adapter_bytes"] == traffic["adapter_bytes"]
    for kind in ("eval", "embedding"):
        assert ab[kind]["ratio"] > 0
    assert ab["eval"]["reload_per_cluster_seconds"] > 0 and ab["eval"]["swap_in_place_seconds"] > 0


def test_report_prints_the_table(bench_result):
    text = bench.format_report(bench_result)
    for label, _ in bench.ROWS:
        assert label in text
    assert "compute fraction" in text and "bytes per training round" in text
    assert "seconds per base-model load" in text


def test_phase_timers_accumulate_and_reset():
    take_phases()
    with phase("x"):
        pass
    with phase("x"):
        pass
    PHASES["y"] += 2.0
    got = take_phases()
    assert set(got) == {"x", "y"} and got["y"] == 2.0 and got["x"] >= 0
    assert take_phases() == {}


def test_content_bytes_counts_array_payloads():
    arrays = {"a": np.zeros((100, 10), np.float32), "b": np.ones(7, np.int64)}
    content = RecordDict(
        {
            "adapter": to_record(arrays),
            "config": ConfigRecord({"server-round": 3}),
            "metrics": MetricRecord({"loss": 1.5}),
        }
    )
    array_bytes, other = content_bytes(content)
    raw = sum(v.nbytes for v in arrays.values())
    assert raw <= array_bytes < raw + 512  # the payload plus small .npy headers
    assert 0 < other < 200
    message = Message(content, dst_node_id=1, message_type="train")
    assert messages_bytes([message, message]) == {
        "messages": 2,
        "array_bytes": 2 * array_bytes,
        "other_bytes": 2 * other,
    }
    empty = RecordDict({"adapter": ArrayRecord()})
    assert content_bytes(empty) == (0, 0)


def test_launcher_flags_come_from_the_preset():
    flags = bench.launcher_flags("quickstart")
    assert flags[flags.index("--num_rounds") + 1] == "16"
    assert flags.count("--seed") == 1
    cfg = bench.parse_args(flags)
    assert cfg.model_name_or_path == "tiny" and cfg.peft_lora_r == 32


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "nope"], "preset 'nope' not found"),
        (["--set", "bogus_key=1"], "bogus_key"),
        (["--geometry", "llama-9b"], "unknown model geometry 'llama-9b'"),
        (["--rounds", "0"], "--rounds 0: must be >= 1"),  # not the preset's value in silence
        (["--clients", "0"], "--clients 0: must be >= 1"),
    ],
)
def test_bad_input_fails_early_with_a_clear_error(args, message, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "fedrouter.bench", *args, "--out", str(tmp_path / "b.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert out.returncode == 2
    assert message in out.stderr
    assert not (tmp_path / "b.json").exists()
    assert list(tmp.iterdir()) == []  # no empty temporary folder left behind


def test_geometry_sizes():
    from fedrouter.tiny_model import geometry_sizes

    sizes = geometry_sizes("llama-3.2-1b")
    assert (sizes["hidden_size"], sizes["num_hidden_layers"], sizes["vocab_size"]) == (
        2048,
        16,
        128256,
    )
    assert geometry_sizes("llama-3.2-1b", 2)["num_hidden_layers"] == 2
    with pytest.raises(ValueError, match="at least 1"):
        geometry_sizes("llama-3.2-1b", 0)
