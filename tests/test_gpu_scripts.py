"""The GPU measurement scripts stay in step with the project's API: a small run on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "gpu"
SMALL_LLAMA = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128256,
}  # fmt: skip


@pytest.mark.slow  # about 30 s: both modes and the A/Bs on a 2-layer model
def test_paper_round_runs_every_step_without_error(tmp_path, tiny_path):
    geometry = tmp_path / "llama.json"
    geometry.write_text(json.dumps(SMALL_LLAMA))
    env = {**os.environ, "QUICK": "1", "OUT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "paper_round.py"), str(geometry)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_round.json").read_text())
    assert result["errors"] == [], result["errors"]
    for mode in ("qlora-4bit", "lora-bf16"):
        assert len(result[mode]["train_seconds"]) == 3 and result[mode]["lora_b_all_moved"]
        assert result[mode]["eval"]["num-examples"] > 0
    ab = result["ab_4bit"]
    assert ab["swap_in_seconds"] > 0 and len(ab["train_call_seconds"]) == 3
