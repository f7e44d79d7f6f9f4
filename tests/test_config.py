"""Tests for fedrouter.config: defaults, validation, CLI parsing and serialisation."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fedrouter import config as config_module
from fedrouter.config import (
    DATASETS,
    EVALUATION_MODES,
    FED_ALGS,
    SPLIT_STRATEGIES,
    Config,
    ConfigError,
    FedRouterError,
    build_parser,
    parse_args,
    run_cli,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m fedrouter.config` with `args` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "fedrouter.config", *args],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- defaults ---


def test_every_field_has_help() -> None:
    assert all(f.metadata.get("help") for f in dataclasses.fields(Config))


def test_parse_args_empty_equals_defaults() -> None:
    assert parse_args([]) == Config()


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().num_rounds = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("DATASETS", "fedrouter.data:DATASET_NAMES"),
        ("SPLIT_STRATEGIES", "fedrouter.data:SPLIT_STRATEGIES"),
        ("EVALUATION_MODES", "fedrouter.data:EVALUATION_MODES"),
        ("INSTRUCTION_FORMATS", "fedrouter.data:INSTRUCTION_FORMATS"),
        ("TEMPLATES", "fedrouter.data:TEMPLATE_NAMES"),
        ("GENERATION_PROMPTS", "fedrouter.data.templates:GENERATION_PROMPTS"),
        ("SEEDINGS", "fedrouter.seeding:SEEDINGS"),
    ],
)
def test_choice_lists_are_their_owners_not_copies(name: str, owner: str) -> None:
    # a copy, even an equal one, would drift from the registry it was taken from
    module, attr = owner.split(":")
    assert getattr(config_module, name) is getattr(importlib.import_module(module), attr)


# --- validation ---


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num_rounds", 0),
        ("num_clients", 0),
        ("sample_clients", 0),
        ("max_steps", 0),
        ("batch_size", 0),
        ("eval_batch_size", -1),
        ("gradient_accumulation_steps", 0),
        ("seq_length", 4),
        ("n_clusters", 0),
        ("peft_lora_r", 0),
        ("max_new_tokens", 0),
        ("max_data_per_client", 0),
        ("max_data_per_client", -2),
        ("train_split", 0.0),
        ("train_split", 1.0),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("min_learning_rate", 1.0),
        ("lora_dropout", 1.0),
        ("lora_dropout", -0.1),
        ("feddpa_alpha", 1.5),
        ("client_resources_cpus", 0.0),
        ("client_resources_gpus", -0.5),
        ("split_strategy", "round_robin"),
        ("dataset_name", "alpaca_gpt4"),
        ("evaluation_mode", "both"),
        ("fed_alg", "fedprox"),
        ("template", "vicuna"),
        ("lora_target_modules", ()),
        ("lora_target_modules", ("all-linear", "q_proj")),
        ("lora_target_modules", ("peft-default", "q_proj")),
        ("instruction_format", "verbose"),
        ("generation_prompt", "newline"),
        ("seeding", "everything"),
        ("local_schedule", "random"),
        ("output_dir", ""),
        ("num_rounds", "3"),
        ("num_rounds", True),
        ("use_peft", "yes"),
        ("use_peft", False),  # full fine-tuning is not supported
        ("seed", 2**32),  # above numpy's seed range, which k-means would reject later
        ("sim_alias", "sub/run"),
        ("sim_alias", "../escape"),
    ],
)
def test_invalid_value_names_key_and_value(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{key: value})
    message = str(info.value)
    assert key in message
    assert "\n" not in message
    if isinstance(value, (int, float, str)) and not (
        isinstance(value, float) and math.isnan(value)
    ):
        assert str(value) in message


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("split_strategy", SPLIT_STRATEGIES),
        ("dataset_name", DATASETS),
        ("evaluation_mode", EVALUATION_MODES),
        ("fed_alg", FED_ALGS),
    ],
)
def test_unknown_choice_lists_valid_ones(key: str, valid: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{key: "nope"})
    assert all(v in str(info.value) for v in valid)


def test_largest_seed_is_accepted() -> None:
    assert Config(seed=2**32 - 1).seed == 2**32 - 1


def test_output_dir_expands_the_home_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Config(output_dir="~/x").output_dir == str(tmp_path / "x")
    assert parse_args(["--output_dir", "~/x"]).output_dir == str(tmp_path / "x")


def test_sample_clients_above_num_clients_names_both() -> None:
    with pytest.raises(ConfigError, match="sample_clients=8.*num_clients=4"):
        Config(num_clients=4, sample_clients=8)


def test_min_fit_clients_above_sample_clients() -> None:
    with pytest.raises(ConfigError, match="min_fit_clients"):
        Config(sample_clients=2, min_fit_clients=3)


def test_global_clusters_above_local_centroids() -> None:
    with pytest.raises(ConfigError, match=r"global_n_clusters=9.*only 8"):
        Config(num_clients=4, sample_clients=4, n_clusters=2, global_n_clusters=9)
    assert (
        Config(num_clients=4, sample_clients=4, n_clusters=2, global_n_clusters=8).global_n_clusters
        == 8
    )


def test_4bit_and_8bit_exclusive() -> None:
    with pytest.raises(ConfigError, match="load_in_4bit.*load_in_8bit"):
        Config(load_in_4bit=True, load_in_8bit=True)
    assert Config(load_in_4bit=False, load_in_8bit=True).load_in_8bit


def test_errors_are_fedrouter_and_value_errors() -> None:
    assert issubclass(ConfigError, FedRouterError)
    assert issubclass(ConfigError, ValueError)


def test_fedrouter_alias_normalised_to_clustered() -> None:
    assert Config(fed_alg="fedrouter").fed_alg == "clustered"
    assert parse_args(["--fed_alg", "fedrouter"]).fed_alg == "clustered"


def test_template_registry_can_be_rebound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fedrouter.config.TEMPLATES", ("alpaca", "vicuna"))
    assert Config(template="vicuna").template == "vicuna"


# --- evaluation rounds ---


def test_evaluation_rounds_out_of_range_warn_and_drop(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedrouter.config"):
        cfg = parse_args(["--num_rounds", "25", "--evaluation_rounds", "3,10,25,50,75,100"])
    assert cfg.evaluation_rounds == (3, 10, 25)
    assert "50,75,100" in caplog.text


def test_evaluation_rounds_sorted_and_deduplicated(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedrouter.config"):
        cfg = Config(num_rounds=5, evaluation_rounds=(5, 1, 5, 3))
    assert cfg.evaluation_rounds == (1, 3, 5)
    assert caplog.text == ""


def test_evaluation_rounds_none_left_is_error(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="evaluation_rounds"):
        Config(num_rounds=2, evaluation_rounds=(0, 3, 10))
    with pytest.raises(ConfigError, match="evaluation_rounds"):
        parse_args(["--evaluation_rounds", ""])


# --- CLI parsing ---


def test_parse_args_types_and_tuples() -> None:
    cfg = parse_args(
        [
            "--num_rounds",
            "4",
            "--learning_rate=1e-4",
            "--evaluation_rounds",
            "1, 4",
            "--lora_target_modules",
            "q_proj,v_proj",
            "--local_data_dir",
            "/data",
            "--max_data_per_client",
            "-1",
        ]
    )
    assert cfg.num_rounds == 4
    assert cfg.learning_rate == 1e-4
    assert cfg.evaluation_rounds == (1, 4)
    assert cfg.lora_target_modules == ("q_proj", "v_proj")
    assert cfg.local_data_dir == "/data"
    assert cfg.max_data_per_client == -1


@pytest.mark.parametrize(
    ("word", "expected"),
    [("True", True), ("true", True), ("1", True), ("yes", True)]
    + [("False", False), ("false", False), ("0", False), ("no", False)],
)
def test_bool_words(word: str, expected: bool) -> None:
    assert parse_args(["--resume", word]).resume is expected


def test_bare_bool_flags_mean_true() -> None:
    cfg = parse_args(
        ["--run_simulation", "--debug", "--num_rounds", "3", "--evaluation_rounds", "3"]
    )
    assert cfg.run_simulation is True
    assert cfg.debug is True
    assert cfg.num_rounds == 3


def test_bad_bool_names_key() -> None:
    with pytest.raises(ConfigError, match="use_peft.*maybe"):
        parse_args(["--use_peft", "maybe"])


def test_unknown_flag_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown option 'bogus_flag'"):
        parse_args(["--bogus_flag", "1"])


def test_abbreviated_flag_is_unknown() -> None:
    # argparse would otherwise read --num_round as --num_rounds
    with pytest.raises(ConfigError, match="num_round'.*did you mean 'num_rounds'"):
        parse_args(["--num_round", "3"])


def test_stray_positional_is_error() -> None:
    with pytest.raises(ConfigError, match="stray"):
        parse_args(["stray"])


def test_wrong_type_names_key_and_value() -> None:
    with pytest.raises(ConfigError, match="num_rounds.*'abc'"):
        parse_args(["--num_rounds", "abc"])
    with pytest.raises(ConfigError, match="evaluation_rounds.*3,x"):
        parse_args(["--evaluation_rounds", "3,x"])


def test_missing_value_is_config_error() -> None:
    with pytest.raises(ConfigError, match="num_rounds"):
        parse_args(["--num_rounds"])


def test_help_lists_every_field_with_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(Config):
        assert f"--{f.name}" in out  # each default: tests/test_defaults.py


def test_parser_options_come_from_fields() -> None:
    flags = {a.dest for a in build_parser()._actions} - {"help"}
    assert flags == {f.name for f in dataclasses.fields(Config)}


# --- replace / to_dict / from_dict ---


def test_replace_revalidates() -> None:
    cfg = Config()
    assert cfg.replace(num_clients=16, sample_clients=4).sample_clients == 4
    with pytest.raises(ConfigError, match="sample_clients"):
        cfg.replace(num_clients=2)


def test_replace_unknown_key() -> None:
    with pytest.raises(ConfigError, match="bogus_key"):
        Config().replace(bogus_key=1)


def test_to_dict_from_dict_round_trip() -> None:
    cfg = parse_args(["--lora_target_modules", "q_proj,v_proj", "--local_data_dir", "/d"])
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["evaluation_rounds"] == list(cfg.evaluation_rounds)
    assert data["lora_target_modules"] == ["q_proj", "v_proj"]
    assert Config.from_dict(data) == cfg


def test_from_dict_partial_uses_defaults_and_parses_strings() -> None:
    cfg = Config.from_dict({"num_rounds": "10", "evaluation_rounds": "3,10", "resume": "false"})
    assert (cfg.num_rounds, cfg.evaluation_rounds, cfg.resume) == (10, (3, 10), False)
    assert cfg.seed == Config().seed


def test_from_dict_unknown_key() -> None:
    with pytest.raises(ConfigError, match="bogus_key"):
        Config.from_dict({"num_rounds": 3, "bogus_key": 1})


def test_from_dict_wrong_type_names_key() -> None:
    with pytest.raises(ConfigError, match="num_clients"):
        Config.from_dict({"num_clients": 2.5})


# --- run_cli and the module entry point ---


def test_run_cli_passes_config_and_returns_result() -> None:
    assert (
        run_cli(lambda cfg: cfg.num_rounds, ["--num_rounds", "7", "--evaluation_rounds", "7"]) == 7
    )


def test_run_cli_reports_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(lambda cfg: None, ["--bogus_flag", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bogus_flag" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_run_cli_reports_errors_raised_by_main(capsys: pytest.CaptureFixture[str]) -> None:
    def main(cfg: Config) -> None:
        raise FedRouterError("dataset 'x' cannot be loaded")

    with pytest.raises(SystemExit):
        run_cli(main, [])
    assert capsys.readouterr().err == "error: dataset 'x' cannot be loaded\n"


def test_run_cli_debug_shows_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(lambda cfg: None, ["--debug", "--num_rounds", "abc"])
    assert "Traceback" in capsys.readouterr().err


def test_run_cli_lets_other_errors_propagate() -> None:
    def main(cfg: Config) -> None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        run_cli(main, [])


def test_module_prints_resolved_config_as_json() -> None:
    proc = run_module("--fed_alg", "fedrouter", "--num_rounds", "10")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["fed_alg"] == "clustered"
    assert data["evaluation_rounds"] == [3, 10]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--bogus_flag", "1"], ["bogus_flag"]),
        (["--num_clients", "4", "--sample_clients", "8"], ["sample_clients", "num_clients"]),
    ],
)
def test_module_bad_input_exits_with_one_line(args: list[str], needles: list[str]) -> None:
    proc = run_module(*args)
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert all(n in lines[0] for n in needles)
    assert "Traceback" not in proc.stderr
