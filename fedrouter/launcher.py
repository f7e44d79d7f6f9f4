"""The shell launcher's variables as Config flags: their names, and a preset read without a run.

``training_scripts/run_flower_simulation_router.sh`` keeps its variables at the top, with the
names of the paper's launcher; users edit them, and a preset (``configs/*.sh``) overrides some.
Their defaults are Config's (a test holds them to it). The loop below the variables passes
each one as the flag of its Config field; this module holds that mapping, and reads a preset's
variables by sourcing the launcher's variable block and the preset in ``sh``, the shell and
the order the launcher uses, without running the launcher's body (no folder is made, nothing
is exported or started).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from fedrouter.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "training_scripts" / "run_flower_simulation_router.sh"
# The line that closes the launcher's variable block; only the lines above it are sourced.
END_OF_VARIABLES = "# ---- end of the variables"

# Launcher variables whose Config field has another name (the paper's launcher's names); every
# other variable, except LAUNCHER_ONLY, is the flag of the field of the same name.
RENAMED = {
    "lr": "learning_rate",
    "lora_r": "peft_lora_r",
    "lora_alpha": "peft_lora_alpha",
    "eval_round": "evaluation_rounds",
    "batch_size_eval": "eval_batch_size",
}
# Variables of the launcher alone, no Config field: the seed loop (each seed becomes --seed),
# the GPUs it exports, flags passed as they are, and the interpreter it runs.
LAUNCHER_ONLY = ("seeds", "gpu", "extra_args", "python_bin")


def config_field(variable: str) -> str:
    """Return the Config field a launcher variable sets."""
    return RENAMED.get(variable, variable)


def variable_block(text: str | None = None) -> str:
    """Return the launcher's variable block: its text above END_OF_VARIABLES."""
    text = LAUNCHER.read_text() if text is None else text
    if END_OF_VARIABLES not in text:
        raise ConfigError(f"{LAUNCHER} has no line '{END_OF_VARIABLES}' after its variables")
    return text.split(END_OF_VARIABLES, 1)[0]


def variable_names(block: str) -> list[str]:
    """Return the variables the block assigns, in their order."""
    names = re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", block, re.M)
    return list(dict.fromkeys(names))


def launcher_variables(preset: str | os.PathLike | None = None) -> dict[str, str]:
    """Return the launcher's variables after ``preset`` (a path, or None for the defaults).

    The block and the preset are sourced in ``sh`` from the project root, as the launcher
    sources them; whatever they print goes to stderr, and only the values come back.
    """
    block = variable_block()
    names = variable_names(block)
    load = 'if [ -n "$1" ]; then case "$1" in */*) . "$1" ;; *) . "./$1" ;; esac; fi\n'
    show = "printf '%s\\0' " + " ".join(f'"${name}"' for name in names) + " >&3\n"
    script = "exec 3>&1 1>&2\n" + block + "\n" + load + show
    out = subprocess.run(
        ["sh", "-c", script, "sh", "" if preset is None else str(preset)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise ConfigError(f"the preset could not be read: {out.stderr.strip()}")
    values = out.stdout.split("\0")[:-1]
    return dict(zip(names, values, strict=True))


def config_flags(variables: dict[str, str]) -> list[str]:
    """Return the flags the launcher passes for its first seed, given its variables."""
    seeds = variables["seeds"].split()
    if not seeds:
        raise ConfigError('seeds is empty; set seeds="111 222" (one run per seed)')
    flags = []
    for name, value in variables.items():
        if name not in LAUNCHER_ONLY:
            flags += [f"--{config_field(name)}", value]
    # unquoted in the launcher: extra_args splits on blanks into further flags
    return [*flags, "--seed", seeds[0], *variables["extra_args"].split()]


def preset_flags(preset: str | os.PathLike | None = None) -> list[str]:
    """Return the flags the launcher would pass for ``preset``'s first seed."""
    return config_flags(launcher_variables(preset))
