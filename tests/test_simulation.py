"""End to end through Flower's simulation runtime: 4 clients x 2 rounds on the 4-bit tiny model."""

import json

import numpy as np

from fedrouter.events import parse
from fedrouter.results import read_metrics
from tests.conftest import run_simulation


def test_run_directory_has_every_file(small_run):
    _, run_dir = small_run
    for name in ("config.json", "metrics.jsonl", "summary.json", "clustering.json"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["num_clients"] == 4
    # what model_name_or_path resolved to, in config.json and from there in summary.json
    source = {"name": "tiny", "kind": "tiny", "path": config["base_model_path"]}
    assert config["model_source"] == {**source, "gguf_file": None, "gguf_sha256": None}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model_source"] == config["model_source"]
    for r in (1, 2):
        for g in range(4):
            assert (run_dir / "adapters" / f"round_{r}" / f"cluster_{g}").is_dir()


def test_adapters_changed_and_load_with_peft(small_run, tiny_path):
    from peft import PeftModel
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    _, run_dir = small_run
    r1 = load_file(run_dir / "adapters/round_1/cluster_0/adapter_model.safetensors")
    r2 = load_file(run_dir / "adapters/round_2/cluster_0/adapter_model.safetensors")
    lora_b = [k for k in r1 if "lora_B" in k]
    # LoRA B starts at zero: non-zero means trained, and round 2 moved it again
    assert all(np.abs(r1[k]).sum() > 0 for k in lora_b)
    assert any(not np.array_equal(r1[k], r2[k]) for k in lora_b)
    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    model = PeftModel.from_pretrained(base, str(run_dir / "adapters/round_2/cluster_0"))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert len(loaded) == len(lora_b)


def test_eval_metrics_and_one_model_load_per_process(small_run):
    _, run_dir = small_run
    events = read_metrics(run_dir)
    evals = [e for e in events if e["event"] == "eval"]
    assert {e["round"] for e in evals} == {1, 2}
    assert {e["partition_id"] for e in evals} == {0, 1, 2, 3}
    for e in evals:
        assert 0.0 <= e["rouge1"] <= 1.0 and 0.0 <= e["routing_accuracy"] <= 1.0
        assert any(k.startswith("rouge1/c") for k in e)
    trains = [e for e in events if e["event"] == "train"]
    assert len(trains) == 2 * 4
    # every worker process loaded the base model exactly once, however many messages it served
    per_pid = {}
    for e in events:
        if e.get("pid", -1) >= 0:
            per_pid.setdefault(e["pid"], set()).add(e["model_loads"])
    assert per_pid and all(loads == {1} for loads in per_pid.values())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["final_per_client"]) == {"0", "1", "2", "3"}
    assert "rouge1" in summary["final"]


def test_every_event_is_a_typed_record_that_writes_it_back(small_run):
    """Each line of a real run is a known kind carrying all its attributes, in their order."""
    _, run_dir = small_run
    for event in read_metrics(run_dir):
        record = parse(event)
        assert record is not None, event["event"]
        assert list(record.to_json().items()) == list(event.items()), event["event"]
        missing = {n for n in record.typed() if getattr(record, n) is None}
        assert missing <= ({"round"} if record.KIND == "failure" else set()), (event, missing)


def test_bad_flag_fails_fast_without_traceback(tmp_path):
    proc, run_dir = run_simulation(tmp_path, "--bogus_flag", "1")
    assert proc.returncode != 0
    assert "bogus_flag" in proc.stderr and "Traceback" not in proc.stderr
    assert run_dir is None
