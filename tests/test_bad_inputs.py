"""Every bad input of the README's table, through the CLI entry in this process: a one-line
error naming the problem, exit 2, no traceback, nothing already written touched, no run
directory created, and no child process started (bad input fails in ``prepare()``)."""

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fedrouter import predict, simulation
from fedrouter.config import parse_args

README = Path(__file__).resolve().parents[1] / "README.md"
BASE = [
    "--model_name_or_path", "tiny", "--dataset_name", "multitask_synthetic",
    "--num_clients", "4", "--sample_clients", "4", "--global_n_clusters", "4",
    "--num_rounds", "2", "--evaluation_rounds", "2", "--client_resources_gpus", "0",
]  # fmt: skip


def qqp_without_label(root: Path) -> list[str]:
    folder = root / "data" / "qqp"
    folder.mkdir(parents=True)
    rows = [{"question1": "a?", "question2": "b?", "idx": 0}]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return ["--dataset_name", "multitask", "--local_data_dir", str(root / "data")]


def local_tasks(root: Path, **replace: bytes) -> list[str]:
    """Write one small JSONL file per task in the Hub's columns; `replace` swaps a file's bytes."""
    rows = {
        "qqp": {"question1": "a?", "question2": "b?", "label": 1},
        "gigaword": {"document": "the cabinet resigned .", "summary": "cabinet resigns"},
        "samsum": {"dialogue": "Ann: Hi", "summary": "Ann says hi."},
        "webnlg": {"input": ["Oslo | country | Norway"], "target": "Oslo is in Norway."},
    }
    for task, row in rows.items():
        (root / "data" / task).mkdir(parents=True)
        text = "".join(json.dumps(row) + "\n" for _ in range(8)).encode()
        (root / "data" / task / "train.jsonl").write_bytes(replace.get(task, text))
    return ["--dataset_name", "multitask", "--local_data_dir", str(root / "data")]


def qqp_label_of_strings(root: Path) -> list[str]:
    row = {"question1": "a?", "question2": "b?", "label": "duplicate"}
    return local_tasks(root, qqp=(json.dumps(row) + "\n").encode() * 8)


def empty_gigaword(root: Path) -> list[str]:
    return local_tasks(root, gigaword=b"")


def bad_byte_in_samsum(root: Path) -> list[str]:
    good = b'{"dialogue": "Ann: Hi", "summary": "Hi."}\n'
    return local_tasks(root, samsum=good + b'{"dialogue": "Bo\xff", "summary": "Yo."}\n')


def foreign_run(root: Path) -> list[str]:
    run = root / "out" / "router_single_clustered_seed2025"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": {"num_rounds": 99}}))
    return ["--resume", "True"]


def truncated_checkpoint(root: Path) -> list[str]:
    # a run's config.json records the LoRA modules resolved for the tiny Llama
    flags = [*BASE, "--output_dir", str(root / "out"), "--lora_target_modules", "q_proj,v_proj"]
    run = root / "out" / "router_single_clustered_seed2025"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": parse_args(flags).to_dict()}))
    (run / "checkpoint.npz").write_bytes(b"PK\x03\x04 cut short")
    return ["--resume", "True"]


def rerun_with_a_typo(root: Path) -> list[str]:
    """A finished seed's log is there; the rerun (as the launcher starts it) has a typo."""
    out = root / "out"
    out.mkdir()
    log = out / "router_single_seed2025_log.txt"
    log.write_text("the log of a finished run\n")
    return ["--log_file", str(log), "--lerning_rate", "1e-3"]


def text_named_gguf(root: Path) -> list[str]:
    (root / "model.gguf").write_text("not a model")
    return ["--model_name_or_path", str(root / "model.gguf")]


def gguf_of_unknown_architecture(root: Path) -> list[str]:
    import gguf

    writer = gguf.GGUFWriter(str(root / "odd.gguf"), arch="bogusarch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return ["--model_name_or_path", str(root / "odd.gguf")]


def not_writable(root: Path) -> list[str]:
    (root / "a_file").write_text("x")
    return ["--output_dir", str(root / "a_file" / "out")]


# name in the README table -> (extra flags, or a function of tmp_path returning them; a word
# the one-line error must contain)
CASES = {
    "unknown variable": (["--bogus_flag", "1"], "bogus_flag"),
    "wrong type": (["--num_rounds", "abc"], "num_rounds"),
    "zero rounds": (["--num_rounds", "0"], "num_rounds"),
    "negative learning rate": (["--learning_rate=-0.1"], "learning_rate"),
    "eval rounds outside the run": (["--evaluation_rounds", "5,9"], "evaluation_rounds"),
    "global_n_clusters above the number of centroids": (
        ["--global_n_clusters", "5"], "global_n_clusters"),
    "n_clusters above a client's sample count": (
        ["--n_clusters", "50", "--max_data_per_client", "40"], "n_clusters"),
    "sample_clients > num_clients": (["--sample_clients", "8"], "sample_clients"),
    "unknown split strategy": (["--split_strategy", "by_magic"], "split_strategy"),
    "unknown dataset": (["--dataset_name", "imagenet"], "dataset_name"),
    "unknown evaluation mode": (["--evaluation_mode", "sideways"], "evaluation_mode"),
    "synthetic_overlap outside [0, 1]": (["--synthetic_overlap", "1.5"], "synthetic_overlap"),
    "synthetic_overlap on another benchmark": (
        ["--dataset_name", "multitask", "--synthetic_overlap", "0.5"], "synthetic_overlap"),
    "4-bit and 8-bit together": (["--load_in_8bit", "True"], "load_in_8bit"),
    "missing model path": (["--model_name_or_path", "/nonexistent/model"], "model_name_or_path"),
    "missing GGUF file": (["--model_name_or_path", "/nonexistent/m.gguf"], "no such GGUF file"),
    "file that is not GGUF": (text_named_gguf, "is not a GGUF file"),
    "GGUF of an architecture transformers cannot load": (
        gguf_of_unknown_architecture, "bogusarch"),
    "LoRA target that is no module of the model": (
        ["--lora_target_modules", "nope_proj"], "lora_target_modules"),
    "missing local_data_dir": (
        ["--dataset_name", "multitask", "--local_data_dir", "/nonexistent/data"], "local_data_dir"),
    "dataset file without the expected columns": (qqp_without_label, "label"),
    "dataset column of the wrong type": (qqp_label_of_strings, "'label' holds str"),
    "empty dataset file": (empty_gigaword, "is empty"),
    "non-UTF-8 byte in a dataset file": (bad_byte_in_samsum, "line 2"),
    "empty client partition": (["--dataset_sample", "4"], "0 train"),
    "seq_length shorter than every prompt": (["--seq_length", "32"], "seq_length=32"),
    "output dir not writable": (not_writable, "output_dir"),
    "GPUs requested without CUDA": (["--client_resources_gpus", "1"], "client_resources_gpus"),
    "more CPUs per client than the machine has": (
        ["--client_resources_cpus", str((os.cpu_count() or 1) + 1)], "client_resources_cpus"),
    "resume into a run of another config": (foreign_run, "config differs"),
    "resume from a truncated checkpoint": (truncated_checkpoint, "truncated"),
    "seed above 2^32 - 1": (["--seed", "4294967296"], "seed"),
    "full fine-tuning": (["--use_peft", "False"], "use_peft"),
    "sim_alias with a path separator": (["--sim_alias", "sub/run"], "sim_alias"),
    "sim_alias leaving output_dir": (["--sim_alias", "../escape"], "sim_alias"),
    "rerun of a finished seed with a misspelt flag": (rerun_with_a_typo, "lerning_rate"),
}  # fmt: skip


# Cases that only a machine without CUDA can show.
WITHOUT_CUDA = {"GPUs requested without CUDA"}


def readme_rows() -> list[str]:
    """Return the first column of the README's bad-input table."""
    text = README.read_text()
    table = text.split("<!-- bad-inputs -->")[1].split("<!-- /bad-inputs -->")[0]
    return [m.group(1).strip() for m in re.finditer(r"^\| ([^|]+?) \|", table, re.M)][1:]


def test_readme_table_and_test_cases_agree():
    assert readme_rows() == list(CASES)


@pytest.fixture()
def no_child_process(monkeypatch):
    """Fail at once where the run's child process would start: bad input must stop before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the run's child process was started: prepare() let it through")

    context = SimpleNamespace(Process=refuse)
    monkeypatch.setattr(
        "fedrouter.supervise.multiprocessing", SimpleNamespace(get_context=lambda _: context)
    )


def cases():
    for name in CASES:
        cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
        yield pytest.param(name, marks=[cuda] if name in WITHOUT_CUDA else [], id=name)


@pytest.mark.parametrize("name", cases())
def test_bad_input_gets_one_line_error(tmp_path, name, tiny_path, capsys, no_child_process):
    extra, needle = CASES[name]
    if callable(extra):
        extra = extra(tmp_path)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "earlier_result.txt").write_text("precious")
    before = {p.name: p.read_bytes() if p.is_file() else None for p in out.iterdir()}
    with pytest.raises(SystemExit) as info:
        simulation.main([*BASE, "--output_dir", str(out), *extra])
    err = capsys.readouterr().err
    assert info.value.code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], err[-2000:]
    assert "Traceback" not in err
    # nothing written is touched (a finished run's log included); no run directory created
    assert {p.name: p.read_bytes() if p.is_file() else None for p in out.iterdir()} == before


# ----- python -m fedrouter.predict ----------------------------------------------------------


def copy_without(run_dir: Path, root: Path, dropped: str) -> list[str]:
    """Copy the finished run without one of its entries; return the CLI arguments."""
    copy = root / "run"
    shutil.copytree(
        run_dir, copy, ignore=lambda folder, names: [dropped] if folder == str(run_dir) else []
    )
    return [str(copy), "--client", "0"]


def run_without_adapters(run_dir: Path, root: Path) -> list[str]:
    return copy_without(run_dir, root, "adapters")


def unfinished_run(run_dir: Path, root: Path) -> list[str]:
    return copy_without(run_dir, root, "summary.json")


def empty_input(run_dir: Path, root: Path) -> list[str]:
    (root / "in.jsonl").write_text("\n")
    return [str(run_dir), "--client", "0", "--input", str(root / "in.jsonl")]


def line_without_instruction(run_dir: Path, root: Path) -> list[str]:
    (root / "in.jsonl").write_text('{"instruction": "Ann: Hi"}\n{"prompt": "Bo: Yo"}\n')
    return [str(run_dir), "--client", "0", "--input", str(root / "in.jsonl")]


def model_of_another_size(run_dir: Path, root: Path) -> list[str]:
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=64, num_hidden_layers=1).save_pretrained(root / "model")
    return [str(run_dir), "--client", "0", "--model", str(root / "model")]


def export_into_a_used_folder(run_dir: Path, root: Path) -> list[str]:
    (root / "used").mkdir()
    (root / "used" / "notes.txt").write_text("mine")
    return [str(run_dir), "--export", str(root / "used")]


# name in the README's predict table -> (the arguments: a list after the run directory, or a
# function of (run directory, tmp_path) returning them all; a word the one-line error must hold)
PREDICT_CASES = {
    "run directory without adapters": (run_without_adapters, "has no adapters"),
    "unfinished run without --round": (unfinished_run, "pass --round"),
    "round that was not saved": (["--round", "7", "--client", "0"], "round 7 was not saved"),
    "client id out of range": (["--client", "9"], "client 9 is out of range"),
    "local routing without a client": ([], "pass --client N"),
    "cluster id out of range": (["--cluster", "4"], "cluster 4 is out of range"),
    "empty input": (empty_input, "is empty"),
    "JSONL line without instruction": (line_without_instruction, "in.jsonl:2 has no 'instruction'"),
    "model of another hidden size": (model_of_another_size, "hidden size 64"),
    "export into a non-empty folder": (export_into_a_used_folder, "is not empty"),
}  # fmt: skip


def predict_readme_rows() -> list[str]:
    """Return the first column of the README's predict bad-input table."""
    text = README.read_text()
    table = text.split("<!-- predict-bad-inputs -->")[1].split("<!-- /predict-bad-inputs -->")[0]
    return [m.group(1).strip() for m in re.finditer(r"^\| ([^|]+?) \|", table, re.M)][1:]


def test_readme_predict_table_and_test_cases_agree():
    assert predict_readme_rows() == list(PREDICT_CASES)


@pytest.fixture()
def no_model_load(monkeypatch):
    """Fail at once where the base model would load: bad input must stop before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the base model was loaded before the bad input was found")

    monkeypatch.setattr("fedrouter.models.get_model_and_tokenizer", refuse)
    monkeypatch.setattr("fedrouter.models.load_model_and_tokenizer", refuse)


@pytest.mark.parametrize("name", list(PREDICT_CASES))
def test_predict_bad_input_gets_one_line_error_before_the_model_loads(
    name, small_run, tmp_path, capsys, no_model_load
):
    extra, needle = PREDICT_CASES[name]
    run_dir = small_run[1]
    argv = extra(run_dir, tmp_path) if callable(extra) else [str(run_dir), *extra]
    with pytest.raises(SystemExit) as info:
        predict.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], err[-2000:]
    assert "Traceback" not in err
