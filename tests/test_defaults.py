"""Config is where each default is written: the launcher, --help, the README's table of launcher
variables and the `flwr run` presets are checked against it."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from flwr.common.config import parse_config_args

from fedrouter import launcher
from fedrouter.config import Config, parse_args, parse_field
from fedrouter.simulation import main as simulation_main

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}
# Launcher variables whose default is not Config's, and why.
EXEMPT = {
    "seeds": "the launcher's seed loop; Config holds one seed",
    "output_dir": "the paper's launcher's folder; Config's is a plain 'output'",
    "gpu": "exported as CUDA_VISIBLE_DEVICES; no Config field",
    "extra_args": "further flags, passed as they are; no Config field",
    "python_bin": "the interpreter the launcher runs; no Config field",
}


def test_each_launcher_variable_is_a_config_field_or_named_here():
    variables = launcher.launcher_variables()
    assert set(launcher.LAUNCHER_ONLY) <= set(EXEMPT)
    unknown = [
        name
        for name in variables
        if name not in launcher.LAUNCHER_ONLY and launcher.config_field(name) not in DEFAULTS
    ]
    assert unknown == []
    # the table of renamed variables names real variables and real fields
    assert set(launcher.RENAMED) <= set(variables)
    assert set(launcher.RENAMED.values()) <= set(DEFAULTS)


def not_config_defaults(values: dict[str, str]) -> dict[str, tuple[str, object]]:
    """Return {variable: (its value, Config's default)} where a value is not the default."""
    fields = {name: launcher.config_field(name) for name in values if name not in EXEMPT}
    return {
        name: (values[name], DEFAULTS[field])
        for name, field in fields.items()
        if parse_field(field, values[name]) != DEFAULTS[field]
    }


def test_launcher_variables_hold_config_defaults():
    assert not_config_defaults(launcher.launcher_variables()) == {}


def flag_pairs(flags: list[str]) -> list[tuple[str, str]]:
    """Return ``--name value`` flags as sorted pairs."""
    assert len(flags) % 2 == 0 and all(f.startswith("--") for f in flags[::2]), flags
    return sorted(zip(flags[::2], flags[1::2], strict=True))


def test_the_launcher_passes_what_the_table_says(tmp_path):
    """Run the launcher with a stand-in interpreter that records its arguments."""
    record = tmp_path / "args.txt"
    stub = tmp_path / "python"
    stub.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{record}'\n")
    stub.chmod(0o755)
    preset = tmp_path / "preset.sh"
    preset.write_text(
        f"output_dir='{tmp_path / 'out'}'\nseeds='7'\nlr=1e-3\nlocal_data_dir=''\n"
        'extra_args="--lora_dropout 0.1"\n'
    )
    subprocess.run(
        ["sh", str(launcher.LAUNCHER), str(preset)],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(stub)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    args = record.read_text().split("\n")[:-1]  # one per line; values may be empty
    assert args[:2] == ["-m", "fedrouter.simulation"] and args[-2] == "--log_file"
    assert flag_pairs(args[2:-2]) == flag_pairs(launcher.preset_flags(preset))
    cfg = parse_args(launcher.preset_flags(preset))
    assert (cfg.seed, cfg.learning_rate, cfg.lora_dropout) == (7, 1e-3, 0.1)


def test_help_shows_config_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        simulation_main(["--help"])
    assert info.value.code == 0
    shown = {}
    for chunk in re.split(r"\n  (?=--)", capsys.readouterr().out)[1:]:
        words = " ".join(chunk.split())
        name = words.split()[0][2:]
        if name != "help":
            shown[name] = re.search(r"\(default: ([^()]*)\)$", words).group(1)
    assert set(shown) == set(DEFAULTS)
    differ = {
        name: (text, DEFAULTS[name])
        for name, text in shown.items()
        if parse_field(name, text) != DEFAULTS[name]
    }
    assert differ == {}, "flag: (--help's default, Config's default)"


def readme_launcher_table() -> dict[str, str]:
    """Return {variable: default} of the README's table of launcher variables."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Launcher variables", 1)[1].split("\n## ", 1)[0]
    rows = {}
    cells = re.findall(r"^\| ([^|]+?) \| ([^|]*?) \|", table, re.M)
    for names, default in cells[1:]:  # after the header
        names = [n.strip("` ") for n in names.split(",")]
        defaults = default.split(", ") if len(names) > 1 else [default]
        assert len(defaults) == len(names), (names, default)
        for name, value in zip(names, defaults, strict=True):
            value = value.strip("` ")
            rows[name] = "" if value == "empty" else value
    return rows


def test_readme_table_of_launcher_variables_agrees():
    rows = readme_launcher_table()
    variables = launcher.launcher_variables()
    documented = set(variables) - {"python_bin"}  # PYTHON: the interpreter, from the environment
    assert set(rows) == documented
    for name in set(rows) & set(EXEMPT):
        assert rows[name] == variables[name], name
    assert not_config_defaults(rows) == {}


def pyproject_run_config() -> dict:
    """Return the preset of pyproject.toml's [tool.flwr.app.config]."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["flwr"]["app"]["config"]


def test_pyproject_run_config_is_a_preset_config_accepts():
    preset = pyproject_run_config()
    # Flower lets --run-config override only the keys listed there: list every field
    assert set(preset) == set(DEFAULTS)
    cfg = Config.from_dict(preset)  # how both apps read it under `flwr run`
    assert cfg.model_name_or_path == "tiny" and cfg.dataset_name == "multitask_synthetic"


def deployment_run_config() -> str:
    """Return the deployment script's default RUN_CONFIG, by running its assignment lines."""
    script = ROOT / "training_scripts" / "run_flower_deployment.sh"
    lines = [s for s in script.read_text().splitlines() if s.startswith("default_run_config=")]
    assert lines
    out = subprocess.run(
        ["bash", "-c", "\n".join(lines) + '\nprintf %s "$default_run_config"'],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def test_deployment_run_config_changes_the_preset_and_config_accepts_it():
    preset = pyproject_run_config()
    changes = parse_config_args([deployment_run_config()])  # as `flwr run --run-config` does
    assert set(changes) <= set(DEFAULTS)
    assert not {"num_clients", "output_dir"} & set(changes)  # the script sets these
    repeated = {k: v for k, v in changes.items() if preset[k] == v}
    assert repeated == {}, "a change that repeats the preset's value"
    cfg = Config.from_dict({**preset, **changes, "num_clients": 2, "output_dir": "/tmp/x"})
    assert cfg.sample_clients == 2  # fits the script's two SuperNodes
