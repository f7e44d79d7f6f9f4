"""Typed, frozen run configuration, parsed once from CLI flags and validated before any work."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import logging
import math
import os
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

# Re-exported: the one base class for errors that run_cli reports as one line.
from fedrouter.data import (
    DATASET_NAMES,
    EVALUATION_MODES,
    INSTRUCTION_FORMATS,
    SPLIT_STRATEGIES,
    SYNTHETIC_BENCHMARK,
    TEMPLATE_NAMES,
)
from fedrouter.data.templates import GENERATION_PROMPTS
from fedrouter.errors import FedRouterError
from fedrouter.methods import SYNONYMS, choices
from fedrouter.seeding import SEEDINGS

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The method registry (methods.py) owns these: each name accepted, and what it is stored as.
FED_ALGS = choices()
FED_ALG_SYNONYMS = SYNONYMS
# The data package owns these lists; they are defined once, there.
DATASETS = DATASET_NAMES
# The template registry lives in the data package; its names are the valid values here.
TEMPLATES = TEMPLATE_NAMES
# The one model name that means "build the project's offline tiny model", not a Hub id.
TINY_MODEL = "tiny"
# lora_target_modules values that stand alone: PEFT's default modules for the model's
# architecture (what the reference gets: its LoraConfig names none), or every linear layer.
PEFT_DEFAULT_TARGETS = "peft-default"
LORA_TARGET_KEYWORDS = (PEFT_DEFAULT_TARGETS, "all-linear")
# numpy's legacy seeding (k-means, data shuffles) takes unsigned 32-bit seeds only.
MAX_SEED = 2**32 - 1
# Which local clusters a client trains each round (see strategies/fedrouter.py).
LOCAL_SCHEDULES = ("round_robin", "all")
CHECKPOINTING = ("auto", "on", "off")

_TRUE_WORDS = ("true", "1", "yes")
_FALSE_WORDS = ("false", "0", "no")
# Values that mean None for an optional CLI field; the launcher may pass an empty variable.
_NONE_WORDS = ("", "None", "none")


class ConfigError(FedRouterError, ValueError):
    """Raise for an invalid or unknown configuration key or value."""


def _opt(default: Any, help: str) -> Any:
    """Return a dataclass field with a default and CLI help text."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    """Hold every setting of a run; build with `parse_args`, `from_dict` or `Config(...)`."""

    # --- schedule ---
    max_steps: int = _opt(10, "Local optimizer steps per client per round.")
    num_train_epochs: int = _opt(1, "Epoch cap per local training call (max_steps wins).")
    num_rounds: int = _opt(25, "Federated rounds.")
    evaluation_rounds: tuple[int, ...] = _opt(
        (3, 10, 25, 50, 75, 100),
        "Rounds after which to evaluate, as a comma list. Rounds outside 1..num_rounds are "
        "dropped with a warning, so the paper's list works with fewer rounds; "
        "it is an error if none remain.",
    )
    batch_size: int = _opt(16, "Per-device training batch size.")
    eval_batch_size: int = _opt(128, "Batch size for generation at evaluation.")
    gradient_accumulation_steps: int = _opt(1, "Gradient accumulation steps.")
    seq_length: int = _opt(1024, "Maximum tokenized sequence length for training.")
    # --- federation ---
    num_clients: int = _opt(8, "Number of clients (data partitions).")
    sample_clients: int = _opt(8, "Clients sampled for training each round.")
    min_fit_clients: int = _opt(
        1, "Minimum successful train replies for a round to count (<= sample_clients)."
    )
    # --- LoRA ---
    peft_lora_r: int = _opt(8, "LoRA rank.")
    peft_lora_alpha: int = _opt(16, "LoRA alpha (scaling = alpha / r).")
    lora_dropout: float = _opt(0.05, "LoRA dropout, in [0, 1).")
    lora_target_modules: tuple[str, ...] = _opt(
        (PEFT_DEFAULT_TARGETS,),
        "Modules to wrap: peft-default (PEFT's default for the model, q_proj,v_proj on Llama, "
        "as in the reference; config.json records the resolved list), all-linear, or a comma "
        "list such as q_proj,k_proj,v_proj,o_proj.",
    )
    # --- optimisation ---
    learning_rate: float = _opt(
        5e-4,
        "Peak learning rate of the cosine schedule over rounds: round r of num_rounds gets "
        "min + (lr - min) * (1 + cos(pi * r / num_rounds)) / 2, so round 1 gets a little less "
        "than this and the last round gets min_learning_rate (as the reference's Flower path).",
    )
    min_learning_rate: float = _opt(
        1e-5, "Learning rate at the last round (end of the cosine schedule over rounds)."
    )
    # --- data ---
    dataset_name: str = _opt("multitask", f"Benchmark; one of {', '.join(DATASETS)}.")
    dataset_sample: int = _opt(
        400000,
        "Cap on the pooled benchmark's rows before its train/test split, spread evenly over "
        "tasks (-1: no cap). The default is above the pools' size, so it changes nothing, as "
        "in the reference.",
    )
    instruction_format: str = _opt(
        "raw",
        "How instructions read: raw = the task's input alone, as in the reference; phrased = "
        f"a task sentence first. One of {', '.join(INSTRUCTION_FORMATS)}.",
    )
    synthetic_overlap: float = _opt(
        0.0,
        "Difficulty of multitask_synthetic, in [0, 1]: how much shared material (a note of "
        "shared entities, a common frame, a common list form) its tasks' inputs carry, so that "
        "their embeddings are harder to tell apart. 0 is the benchmark as it always was; every "
        "input still determines its response.",
    )
    local_data_dir: str | None = _opt(
        None, "Directory holding local copies of the datasets (for offline or mirrored runs)."
    )
    split_strategy: str = _opt(
        "multitask_clusters",
        f"How tasks are spread over clients; one of {', '.join(SPLIT_STRATEGIES)}.",
    )
    train_split: float = _opt(
        0.8, "Share of the pooled benchmark in the global train split (seed 0), in (0, 1)."
    )
    max_data_per_client: int = _opt(600, "Cap on each client's training rows (-1: all).")
    max_eval_size: int = _opt(300, "Cap on each client's test rows.")
    template: str = _opt("alpaca", f"Prompt template; one of {', '.join(TEMPLATE_NAMES)}.")
    generation_prompt: str = _opt(
        "marker",
        "How the evaluation prompt ends: marker = right after '### Response:', so the model "
        "writes the space with the first word, as in training; exact = the reference's "
        "prompt byte for byte, with the trailing space.",
    )
    # --- model ---
    model_name_or_path: str = _opt(
        "meta-llama/Llama-3.2-1B",
        f"Hub id, local folder, .gguf file (converted once and cached), a named model "
        f"(smollm2-135m), or '{TINY_MODEL}', the offline tiny model.",
    )
    use_peft: bool = _opt(
        True, "Train LoRA adapters (the only mode: full fine-tuning is not supported)."
    )
    load_in_4bit: bool = _opt(True, "Load the base model in 4-bit NF4 (QLoRA; needs CUDA).")
    load_in_8bit: bool = _opt(False, "Load the base model in 8-bit (excludes load_in_4bit).")
    gradient_checkpointing: str = _opt(
        "auto",
        "Recompute activations in the backward pass to save GPU memory: on, off, or auto "
        "(decided per training call: on a GPU only when a batch of the call's longest row "
        "would keep more activations than a fifth of the client's share of the card; off on "
        "a CPU). It changes speed and memory, not results.",
    )
    max_new_tokens: int = _opt(512, "Tokens generated (greedily) per evaluation sample.")
    # --- algorithm ---
    fed_alg: str = _opt(
        "clustered",
        f"Federated algorithm; one of {', '.join(FED_ALGS)} (fedrouter is stored as clustered).",
    )
    n_clusters: int = _opt(1, "Local k-means clusters per client.")
    global_n_clusters: int = _opt(4, "Global task clusters (one adapter each).")
    sim_round: int = _opt(105, "Round at which cfl clusters clients; ignored by FedRouter.")
    feddpa_alpha: float = _opt(0.5, "FedDPA mixing weight of the global adapter, in [0, 1].")
    local_schedule: str = _opt(
        "round_robin",
        "Local clusters a client trains each round: round_robin = cluster round mod n_clusters "
        "(the reference's Flower path); all = every one (its standalone loop). Only methods "
        "with several local clusters (clustered, router_oracle) differ.",
    )
    evaluation_mode: str = _opt(
        "local",
        "local = test on the client's own tasks, route among its own clusters; global = test "
        "on every task, route among all clusters; data_local_eval_global = own tasks, all "
        "clusters; data_global_eval_local = every task, own clusters.",
    )
    # --- run ---
    seed: int = _opt(2025, "Run seed: the client data split, or everything with seeding=run.")
    seeding: str = _opt(
        "reference",
        "reference = the run seed drives the data split only; LoRA init (2025), k-means (0), "
        "the trainer (42) and each round's sample (the round) use the reference's fixed "
        "seeds. run = the run seed drives them all.",
    )
    output_dir: str = _opt("output", "Directory that receives run directories and logs.")
    sim_alias: str = _opt("router_single", "Run name prefix used in log and run directory names.")
    scenario: str = _opt(
        "custom",
        "Label of the experiment's scenario (single, interference, generalization...); "
        "the report groups runs by it. Set by the scenario presets.",
    )
    client_resources_cpus: float = _opt(1.0, "CPUs reserved per simulated client (> 0).")
    client_resources_gpus: float = _opt(
        1.0, "GPU fraction per simulated client (>= 0; not requested without CUDA)."
    )
    run_simulation: bool = _opt(
        True, "Run the in-process simulation (a bare flag, as the paper's launcher passes it)."
    )
    debug: bool = _opt(False, "Show tracebacks on errors.")
    resume: bool = _opt(
        False,
        "Continue the run of this config (same output_dir, sim_alias, fed_alg, seed) from its "
        "last checkpoint instead of starting a new run directory.",
    )
    save_every: int = _opt(
        1, "Checkpoint the server state every this many rounds (and at the last round)."
    )

    def __post_init__(self) -> None:
        """Check types, normalise values, and validate every key and combination."""
        for f in dataclasses.fields(self):
            value = _check_type(f.name, getattr(self, f.name), _field_types()[f.name])
            object.__setattr__(self, f.name, value)
        object.__setattr__(self, "fed_alg", FED_ALG_SYNONYMS.get(self.fed_alg, self.fed_alg))
        # a shell passes '~' through when quoted; without this the run lands in a folder named ~
        object.__setattr__(self, "output_dir", os.path.expanduser(self.output_dir))
        self._validate_ranges()
        self._validate_choices()
        self._validate_combinations()
        object.__setattr__(self, "evaluation_rounds", self._kept_evaluation_rounds())

    def _validate_ranges(self) -> None:
        """Check single-key numeric bounds."""
        minimums = {
            "max_steps": 1,
            "num_train_epochs": 1,
            "num_rounds": 1,
            "batch_size": 1,
            "eval_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "seq_length": 8,  # shorter than a prompt template; almost surely a typo
            "num_clients": 1,
            "sample_clients": 1,
            "min_fit_clients": 1,
            "save_every": 1,
            "peft_lora_r": 1,
            "peft_lora_alpha": 1,
            "dataset_sample": 1,
            "max_eval_size": 1,
            "max_new_tokens": 1,
            "n_clusters": 1,
            "global_n_clusters": 1,
            "sim_round": 0,
            "seed": 0,  # numpy and torch seeds must be non-negative
        }
        for name, low in minimums.items():
            if getattr(self, name) < low:
                _fail(name, getattr(self, name), f"must be >= {low}")
        if self.seed > MAX_SEED:
            _fail("seed", self.seed, f"must be <= 2**32 - 1 = {MAX_SEED} (numpy's seed range)")
        if self.max_data_per_client != -1 and self.max_data_per_client < 1:
            _fail("max_data_per_client", self.max_data_per_client, "must be >= 1, or -1 for all")
        if not 0.0 < self.train_split < 1.0:
            _fail("train_split", self.train_split, "must be in (0, 1)")
        if not 0.0 <= self.lora_dropout < 1.0:
            _fail("lora_dropout", self.lora_dropout, "must be in [0, 1)")
        if not 0.0 <= self.synthetic_overlap <= 1.0:
            _fail("synthetic_overlap", self.synthetic_overlap, "must be in [0, 1]")
        if not 0.0 <= self.feddpa_alpha <= 1.0:
            _fail("feddpa_alpha", self.feddpa_alpha, "must be in [0, 1]")
        if not self.learning_rate > 0.0:
            _fail("learning_rate", self.learning_rate, "must be > 0")
        if not 0.0 <= self.min_learning_rate <= self.learning_rate:
            _fail("min_learning_rate", self.min_learning_rate, "must be in [0, learning_rate]")
        if not self.client_resources_cpus > 0.0:
            _fail("client_resources_cpus", self.client_resources_cpus, "must be > 0")
        if not self.client_resources_gpus >= 0.0:
            _fail("client_resources_gpus", self.client_resources_gpus, "must be >= 0")
        for name in ("model_name_or_path", "output_dir", "sim_alias", "scenario"):
            if not getattr(self, name).strip():
                _fail(name, getattr(self, name), "must not be empty")
        if "/" in self.sim_alias or "\\" in self.sim_alias or ".." in self.sim_alias:
            # it names files and a folder inside output_dir, never a path
            _fail("sim_alias", self.sim_alias, "must not contain a path separator or '..'")
        if not self.use_peft:
            _fail("use_peft", self.use_peft, "full fine-tuning is not supported; use LoRA (True)")

    def _validate_choices(self) -> None:
        """Check keys that take one of a fixed set of names."""
        choices = {
            "fed_alg": FED_ALGS,
            "split_strategy": SPLIT_STRATEGIES,
            "dataset_name": DATASETS,
            "evaluation_mode": EVALUATION_MODES,
            "template": TEMPLATES,  # looked up now, so a rebound registry is honoured
            "instruction_format": INSTRUCTION_FORMATS,
            "generation_prompt": GENERATION_PROMPTS,
            "seeding": SEEDINGS,
            "local_schedule": LOCAL_SCHEDULES,
            "gradient_checkpointing": CHECKPOINTING,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                _fail(name, getattr(self, name), f"must be one of: {', '.join(valid)}")
        modules = self.lora_target_modules
        if not modules or any(not m.strip() for m in modules):
            _fail("lora_target_modules", ",".join(modules), "must name at least one module")
        for keyword in LORA_TARGET_KEYWORDS:
            if keyword in modules and len(modules) > 1:
                # PEFT takes these only as the whole value, never inside a list
                _fail("lora_target_modules", ",".join(modules), f"{keyword} must stand alone")

    def _validate_combinations(self) -> None:
        """Check constraints that involve several keys."""
        if self.sample_clients > self.num_clients:
            raise ConfigError(
                f"sample_clients={self.sample_clients} is larger than "
                f"num_clients={self.num_clients}"
            )
        if self.min_fit_clients > self.sample_clients:
            # no round could ever count
            raise ConfigError(
                f"min_fit_clients={self.min_fit_clients} is larger than "
                f"sample_clients={self.sample_clients}"
            )
        n_centroids = self.num_clients * self.n_clusters
        if self.global_n_clusters > n_centroids:
            raise ConfigError(
                f"global_n_clusters={self.global_n_clusters} is larger than the number of local "
                f"centroids: there are only {n_centroids} "
                f"(num_clients={self.num_clients} x n_clusters={self.n_clusters})"
            )
        if self.synthetic_overlap and self.dataset_name != SYNTHETIC_BENCHMARK:
            raise ConfigError(
                f"synthetic_overlap={self.synthetic_overlap} applies to dataset_name="
                f"{SYNTHETIC_BENCHMARK} only, not {self.dataset_name}; leave it at 0"
            )
        if self.load_in_4bit and self.load_in_8bit:
            raise ConfigError("load_in_4bit and load_in_8bit are both True; choose one")
        if self.fed_alg == "cfl" and self.sim_round > self.num_rounds:
            logger.warning(
                "sim_round=%d is after the last round (num_rounds=%d): cfl will never cluster",
                self.sim_round,
                self.num_rounds,
            )

    def _kept_evaluation_rounds(self) -> tuple[int, ...]:
        """Return evaluation rounds sorted, deduplicated and within 1..num_rounds."""
        rounds = sorted(set(self.evaluation_rounds))
        kept = tuple(r for r in rounds if 1 <= r <= self.num_rounds)
        dropped = [r for r in rounds if r not in kept]
        if dropped:
            logger.warning(
                "evaluation_rounds: dropping %s, outside 1..num_rounds=%d",
                ",".join(map(str, dropped)),
                self.num_rounds,
            )
        if not kept:
            _fail(
                "evaluation_rounds",
                ",".join(map(str, rounds)),
                f"no round lies within 1..num_rounds={self.num_rounds}",
            )
        return kept

    def replace(self, **changes: Any) -> Config:
        """Return a copy with `changes` applied and validated again."""
        _reject_unknown(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-friendly dict (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build a config from a dict; missing keys take defaults, unknown keys are errors."""
        _reject_unknown(data)
        types_ = _field_types()
        values = {
            k: _convert(k, v, types_[k]) if isinstance(v, str) else v for k, v in data.items()
        }
        return cls(**values)


def _fail(name: str, value: Any, reason: str) -> NoReturn:
    """Raise a ConfigError that names the key and the bad value."""
    raise ConfigError(f"{name}={value!r}: {reason}")


def _field_names() -> tuple[str, ...]:
    """Return the config's field names in declaration order."""
    return tuple(f.name for f in dataclasses.fields(Config))


@functools.cache
def _field_types() -> dict[str, Any]:
    """Return each field's resolved type (annotations are strings under postponed evaluation)."""
    return typing.get_type_hints(Config)


def _reject_unknown(keys: Mapping[str, Any]) -> None:
    """Raise a ConfigError naming any key that is not a config field."""
    unknown = sorted(set(keys) - set(_field_names()))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}{_suggest(unknown[0])}")


def _suggest(name: str) -> str:
    """Return a 'did you mean' hint for a misspelt key, or an empty string."""
    close = difflib.get_close_matches(name, _field_names(), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """Return the type inside `X | None`, and whether None was allowed."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner, True
    return tp, False


def _item_type(tp: Any) -> Any:
    """Return X for `tuple[X, ...]`, or None when `tp` is not a tuple type."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None


def _check_type(name: str, value: Any, tp: Any) -> Any:
    """Return `value` coerced losslessly to `tp` (list -> tuple, int -> float), or raise."""
    tp, optional = _strip_optional(tp)
    if optional and value is None:
        return None
    if (item := _item_type(tp)) is not None:
        if not isinstance(value, (list, tuple)):
            _fail(name, value, "expected a list")
        return tuple(_check_type(name, v, item) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    # bool is a subclass of int, but True is never a sensible round count
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        _fail(name, value, f"expected {tp.__name__}, got {type(value).__name__}")
    if tp is float and not math.isfinite(value):
        _fail(name, value, "must be finite")
    return value


def _parse_bool(text: str) -> bool:
    """Return the bool a CLI word means."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"expected one of {'/'.join(_TRUE_WORDS + _FALSE_WORDS)}")


def _parse_scalar(text: str, tp: type) -> Any:
    """Return `text` parsed as a scalar of type `tp`."""
    if tp is bool:
        return _parse_bool(text)
    if tp in (int, float):
        return tp(text.strip())
    return text


def _convert(name: str, text: str, tp: Any) -> Any:
    """Return a CLI string converted to the field's type, or raise a ConfigError naming it."""
    tp, optional = _strip_optional(tp)
    if optional and text in _NONE_WORDS:
        return None
    item = _item_type(tp)
    try:
        if item is None:
            return _parse_scalar(text, tp)
        # also accept the bracketed form that str(list) or a JSON dump produces
        parts = text.strip().strip("[]()").split(",")
        return tuple(_parse_scalar(p.strip().strip("'\""), item) for p in parts if p.strip())
    except ValueError:
        expected = tp.__name__ if item is None else f"a comma list of {item.__name__}"
        _fail(name, text, f"expected {expected}")


def parse_field(name: str, text: str) -> Any:
    """Return ``text`` as the value that the flag ``--<name> text`` gives the field."""
    _reject_unknown({name: text})
    return _convert(name, text, _field_types()[name])


def _metavar(tp: Any) -> str:
    """Return the placeholder shown for a field's value in --help."""
    tp, _ = _strip_optional(tp)
    if (item := _item_type(tp)) is not None:
        return f"{item.__name__.upper()}[,{item.__name__.upper()}...]"
    return tp.__name__.upper()


def _format_default(value: Any) -> str:
    """Return a default as the user would type it on the CLI."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


class _RaisingParser(argparse.ArgumentParser):
    """ArgumentParser that raises ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise the parse error as a ConfigError."""
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    """Return a parser with one `--<field>` option per Config field."""
    parser = _RaisingParser(
        prog="python -m fedrouter.config",
        description="FedRouter run configuration.",
        # abbreviations would let a typo silently set a different key
        allow_abbrev=False,
    )
    types_ = _field_types()
    for f in dataclasses.fields(Config):
        tp = types_[f.name]
        kwargs: dict[str, Any] = {
            # unset flags stay absent, so the dataclass defaults are the only defaults
            "default": argparse.SUPPRESS,
            "metavar": _metavar(tp),
            "help": f"{f.metadata['help']} (default: {_format_default(f.default)})",
        }
        if tp is bool:
            # a bare flag means True, as in the paper's launcher's `--run_simulation`
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        parser.add_argument(f"--{f.name}", **kwargs)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Return the validated Config for `argv` (default: sys.argv[1:])."""
    args = list(sys.argv[1:] if argv is None else argv)
    namespace, extras = build_parser().parse_known_args(args)
    for extra in extras:
        if extra.startswith("-"):
            name = extra.lstrip("-").split("=", 1)[0]
            raise ConfigError(f"unknown option '{name}'{_suggest(name)}")
        raise ConfigError(f"unexpected argument '{extra}' (options take the form --name value)")
    types_ = _field_types()
    values = {k: _convert(k, v, types_[k]) for k, v in vars(namespace).items()}
    return Config(**values)


def _debug_requested(argv: Sequence[str]) -> bool:
    """Return whether argv asks for tracebacks, even when the rest of it does not parse."""
    for i, arg in enumerate(argv):
        if arg == "--debug":
            nxt = argv[i + 1] if i + 1 < len(argv) else "true"
            return nxt.startswith("--") or nxt.strip().lower() in _TRUE_WORDS
        if arg.startswith("--debug="):
            return arg.split("=", 1)[1].strip().lower() in _TRUE_WORDS
    return False


def report_errors(fn: Callable[[], T], debug: bool = False) -> T:
    """Call ``fn()``; report a FedRouterError as one line (and its traceback if debugging)
    on stderr and exit 2."""
    try:
        return fn()
    except FedRouterError as exc:
        if debug:
            sys.stderr.write(traceback.format_exc())
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        raise SystemExit(2) from None


def run_cli(main_fn: Callable[[Config], T], argv: Sequence[str] | None = None) -> T:
    """Call `main_fn(parse_args(argv))`; report a FedRouterError as one line and exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    return report_errors(lambda: main_fn(parse_args(args)), _debug_requested(args))


def _print_config(config: Config) -> None:
    """Write the resolved config to stdout as JSON."""
    sys.stdout.write(json.dumps(config.to_dict(), indent=2) + "\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_cli(_print_config)
