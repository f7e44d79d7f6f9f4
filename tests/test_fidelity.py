"""Fidelity to the reference implementation: one test (or a few) per row of the README table.

The reference is the paper's own code, the Flower path of GabrielTalasso/FedRouter. Where a
row is about a procedure (pools, splits, subsamples), the expected value is built with the
`datasets` calls that procedure is made of (shuffle, filter, shard, train_test_split), on a
small fixture, and compared with what this project produces.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, concatenate_datasets

from fedrouter.config import Config, parse_args
from fedrouter.data import load_benchmark, partition, tasks_for
from fedrouter.data import loaders as loaders_module
from fedrouter.data import registry as registry_module
from fedrouter.data.partition import EVALUATION_MODES, routes_globally
from fedrouter.data.registry import POOL_ORDER
from fedrouter.data.synthetic import SYNTHETIC_TASKS
from fedrouter.data.templates import (
    extract_response,
    format_prompt,
    generation_prompt,
    get_template,
)
from fedrouter.evaluation import rouge_per_sample
from fedrouter.launcher import preset_flags
from fedrouter.preflight import resolve_lora_targets
from fedrouter.seeding import kmeans_seed, lora_seed, reference_round_sample, trainer_seed
from fedrouter.training import cosine_lr, tokenize_rows

REFERENCE_TASKS = ["qqp", "gigaword", "samsum", "webnlg"]  # split_dataset.py's list


def launcher_defaults() -> Config:
    """Return the Config the launcher builds with its untouched variables (its first seed)."""
    return parse_args(preset_flags())


# --- the launcher's untouched defaults hold the reference's value in every config row ----


def test_launcher_defaults_are_the_reference_settings():
    cfg = launcher_defaults()
    # 1 LoRA: no target_modules in the reference's LoraConfig, so PEFT's default
    assert resolve_lora_targets(cfg, "llama").lora_target_modules == ("q_proj", "v_proj")
    assert (cfg.peft_lora_r, cfg.peft_lora_alpha, cfg.lora_dropout) == (8, 16, 0.05)
    # 2 raw instructions; 3 the alpaca template
    assert cfg.instruction_format == "raw"
    assert cfg.template == "alpaca"
    # 4 data: benchmark, pools (no dataset_sample cap), splits, caps
    assert cfg.dataset_name == "multitask"
    assert cfg.dataset_sample >= 400_000
    assert cfg.train_split == 0.8
    assert cfg.split_strategy == "multitask_clusters"
    assert (cfg.num_clients, cfg.sample_clients) == (8, 8)
    assert (cfg.max_data_per_client, cfg.max_eval_size) == (600, 300)
    # 5 generation: greedy, 512 new tokens, batch 128
    assert cfg.max_new_tokens == 512
    assert cfg.eval_batch_size == 128
    # 6 evaluation mode; 7 seeds; 8 learning rate over rounds; 9 local schedule
    assert cfg.evaluation_mode == "local"
    assert cfg.seeding == "reference"
    assert (cfg.learning_rate, cfg.min_learning_rate, cfg.num_rounds) == (5e-4, 1e-5, 25)
    assert cfg.local_schedule == "round_robin"
    # the rest of the reference launcher
    assert (cfg.max_steps, cfg.batch_size, cfg.gradient_accumulation_steps) == (10, 16, 1)
    assert (cfg.seq_length, cfg.n_clusters, cfg.global_n_clusters) == (1024, 1, 4)
    assert cfg.evaluation_rounds == (3, 10, 25)
    assert cfg.model_name_or_path == "meta-llama/Llama-3.2-1B"
    assert cfg.load_in_4bit and cfg.use_peft
    assert cfg.fed_alg == "clustered"


# --- 1. LoRA targets ---------------------------------------------------------------------


def test_default_lora_wraps_q_and_v_of_a_tiny_llama(tiny_path):
    from fedrouter.models import ModelSpec, load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(ModelSpec(tiny_path, load_in_4bit=False))
    wrapped = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {"q_proj", "v_proj"}


def test_resolved_targets_are_what_config_json_records():
    assert resolve_lora_targets(Config(), "llama").lora_target_modules == ("q_proj", "v_proj")
    chosen = Config(lora_target_modules=("all-linear",))
    assert resolve_lora_targets(chosen, "llama") is chosen  # an explicit choice stays


# --- 2. Instruction text -----------------------------------------------------------------


def _spec(name: str):
    return next(spec for spec in tasks_for("multitask") if spec.name == name)


def test_real_rows_map_to_the_reference_raw_instruction_and_response():
    qqp = {"question1": "How do I learn Python?", "question2": "Best way to learn Python?"}
    assert _spec("qqp").to_row({**qqp, "label": 1}) == {
        "instruction": "How do I learn Python?-Best way to learn Python?",
        "response": "Yes",
        "task": "qqp",
    }
    assert _spec("qqp").to_row({**qqp, "label": 0})["response"] == "No"
    webnlg = {"input": ["Aarhus | leader | Jacob Bundsgaard"], "target": "Aarhus is led by J.B."}
    assert _spec("webnlg").to_row(webnlg)["instruction"] == (
        "['Aarhus | leader | Jacob Bundsgaard']"
    )
    two = {"input": ["A | b | C", "D | e | F"], "target": "t"}
    assert _spec("webnlg").to_row(two)["instruction"] == "['A | b | C', 'D | e | F']"
    dialogue = "Amanda: I baked cookies.\r\nJerry: Sure!"
    samsum = _spec("samsum").to_row({"dialogue": dialogue, "summary": "Amanda baked."})
    assert (samsum["instruction"], samsum["response"]) == (dialogue, "Amanda baked.")
    doc = "australia 's current account deficit shrunk by a record ."
    giga = _spec("gigaword").to_row({"document": doc, "summary": "deficit narrows"})
    assert (giga["instruction"], giga["response"]) == (doc, "deficit narrows")


def test_phrased_format_is_a_named_option(tmp_path):
    raw = load_benchmark("multitask_synthetic")
    phrased = load_benchmark("multitask_synthetic", instruction_format="phrased")
    specs = {spec.name: spec for spec in tasks_for("multitask_synthetic")}
    for a, b in zip(raw.train[:50], phrased.train[:50], strict=True):
        assert b["instruction"] == f"{specs[a['task']].phrasing}\n{a['instruction']}"
        assert not a["instruction"].startswith(specs[a["task"]].phrasing)


# --- 3. Template and completion-only loss ------------------------------------------------


def test_training_text_is_the_reference_alpaca_text_byte_for_byte():
    text = get_template("alpaca").training_text("Is it?-Is it so?", "Yes", "</s>")
    assert text == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nIs it?-Is it so? \n\n### Response: Yes</s>"
    )
    assert format_prompt("x") + "Yes" + "</s>" == get_template("alpaca").training_text(
        "x", "Yes", "</s>"
    )


@pytest.mark.parametrize("template", ["alpaca", "alpaca_short"])
def test_loss_covers_exactly_the_tokens_after_the_response_marker(tiny_path, template):
    from fedrouter.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_path)
    rows = [{"instruction": "Anna Berg-Who is Anna?", "response": "different: x vs y"}]
    out = tokenize_rows(rows, tokenizer, template, max_length=512)
    full = get_template(template).training_text(
        rows[0]["instruction"], rows[0]["response"], tokenizer.eos_token
    )
    assert out["input_ids"][0] == tokenizer(full)["input_ids"]  # the text, tokenized whole
    kept = [t for t in out["labels"][0] if t != -100]
    decoded = tokenizer.decode(kept)
    assert decoded.lstrip(" ") == rows[0]["response"] + tokenizer.eos_token
    masked = out["labels"][0].index(kept[0])
    assert tokenizer.decode(out["input_ids"][0][:masked]).endswith("### Response:")


# --- 4. Task order, pools and splits -----------------------------------------------------


def test_task_order_comes_from_the_registry():
    assert [spec.name for spec in tasks_for("multitask")] == REFERENCE_TASKS
    assert list(SYNTHETIC_TASKS) == [
        "paraphrase_synth",
        "headline_synth",
        "dialogsum_synth",
        "data2text_synth",
    ]
    assert POOL_ORDER["multitask"] == ("qqp", "webnlg", "samsum", "gigaword")
    sizes = {spec.name: spec.pool_size for spec in tasks_for("multitask")}
    assert sizes == {"qqp": 30_000, "gigaword": 30_000, "samsum": None, "webnlg": None}


def _hub_fixture(root: Path) -> dict[str, list[dict]]:
    """Write small task files in the Hub's columns; return the examples per task."""
    rng = random.Random(5)
    examples = {
        "qqp": [
            {"question1": f"q{i} a?", "question2": f"q{i} b?", "label": i % 2} for i in range(13)
        ],
        "webnlg": [{"input": [f"S{i} | p | O{i}"], "target": f"S{i} p O{i}."} for i in range(9)],
        "samsum": [
            {"dialogue": f"A: hi {i}\r\nB: yo", "summary": f"they met {i}"} for i in range(7)
        ],
        "gigaword": [{"document": f"doc {i} .", "summary": f"head {i}"} for i in range(11)],
    }
    for task, rows in examples.items():
        rng.shuffle(rows)
        (root / task).mkdir(parents=True)
        Dataset.from_list(rows).to_parquet(str(root / task / "part.parquet"))
    return examples


def _reference_pools(examples: dict[str, list[dict]], pool: int, train_split: float):
    """Build the reference's get_dataset pools with `datasets`' own calls."""
    mapped = {}
    for task in ("qqp", "webnlg", "samsum", "gigaword"):
        ds = Dataset.from_list(examples[task])
        if task in ("qqp", "gigaword"):
            ds = ds.shuffle(seed=0).select(range(pool))
        spec = _spec(task)
        mapped[task] = Dataset.from_list([spec.to_row(ex) for ex in ds])
    joined = concatenate_datasets([mapped[t] for t in ("qqp", "webnlg", "samsum", "gigaword")])
    split = joined.shuffle(seed=0).train_test_split(test_size=1 - train_split, seed=0)
    return split["train"].to_list(), split["test"].to_list()


def test_pools_and_global_split_follow_the_reference(tmp_path, monkeypatch):
    examples = _hub_fixture(tmp_path / "data")
    small = tuple(
        dataclasses.replace(s, pool_size=6) if s.pool_size else s for s in tasks_for("multitask")
    )
    monkeypatch.setitem(registry_module._BENCHMARKS, "multitask", small)
    loaders_module._load_cached.cache_clear()
    try:
        pools = load_benchmark("multitask", local_data_dir=tmp_path / "data", train_split=0.8)
    finally:
        loaders_module._load_cached.cache_clear()
    train, test = _reference_pools(examples, pool=6, train_split=0.8)
    assert list(pools.train) == train
    assert list(pools.test) == test
    assert len(pools.test) == math.ceil(0.2 * (6 + 9 + 7 + 6))


def test_dataset_sample_is_a_no_op_at_its_default():
    default = load_benchmark("multitask_synthetic")
    assert load_benchmark("multitask_synthetic", dataset_sample=-1) == default
    assert len(default.train) + len(default.test) == 4 * 2500


def _pool_fixture(n_per_task: int = 40) -> list[dict]:
    return [
        {"instruction": f"{task} {i}", "response": f"r{i}", "task": task}
        for task in REFERENCE_TASKS
        for i in range(n_per_task)
    ]


def _reference_split(rows, strategy: str, num_clients: int, seed: int, cap: int):
    """The reference's split_dataset, with `datasets`' calls, for 4 tasks."""
    ds = Dataset.from_list(rows).shuffle(seed=seed)
    per = num_clients // len(REFERENCE_TASKS)
    out = []
    for i in range(num_clients):
        block = i // per
        first = ds.filter(lambda x, t=REFERENCE_TASKS[block]: x["task"] == t)
        if strategy == "multitask_clusters":
            pool = first.shuffle(seed=seed)
        else:
            nxt = REFERENCE_TASKS[(block + 1) % len(REFERENCE_TASKS)]
            second = ds.filter(lambda x, t=nxt: x["task"] == t)
            halves = [
                first.select(range(len(first) // 2)),
                second.select(range(len(second) // 2, len(second))),
            ]
            pool = concatenate_datasets(halves).shuffle(seed=seed)
        share = pool.shard(per, i % per)
        out.append(share.select(range(min(len(share), cap))).to_list())
    return out


@pytest.mark.parametrize("strategy", ["multitask_clusters", "multitask_multi_domain"])
def test_eight_clients_get_the_reference_tasks_and_halves(strategy):
    train = _pool_fixture(40)
    test = _pool_fixture(10)
    clients = partition(
        train,
        test,
        tasks=REFERENCE_TASKS,
        split_strategy=strategy,
        num_clients=8,
        max_data_per_client=15,
        max_eval_size=4,
        seed=111,
    )
    expected = _reference_split(train, strategy, 8, 111, 15)
    assert [c.train for c in clients] == expected
    assert [c.test for c in clients] == _reference_split(test, strategy, 8, 111, 4)
    # client i's first task is tasks[i // 2]
    for i, client in enumerate(clients):
        assert REFERENCE_TASKS[i // 2] in client.tasks


def test_multitask_iid_shards_are_disjoint_where_the_reference_overlaps():
    rows = _pool_fixture(40)
    clients = partition(
        rows, rows, tasks=REFERENCE_TASKS, split_strategy="multitask_iid", num_clients=8, seed=3
    )
    seen = [r["instruction"] for c in clients for r in c.train]
    assert len(seen) == len(set(seen)) == len(rows)
    # the reference re-shuffles the same dataset with the same seed inside its client loop
    ds, overlap = Dataset.from_list(rows), set()
    shards = []
    for i in range(8):
        ds = ds.shuffle(seed=3)
        shards.append({r["instruction"] for r in ds.shard(8, i)})
    for i in range(8):
        for j in range(i + 1, 8):
            overlap |= shards[i] & shards[j]
    assert overlap  # which is why this project keeps one shuffle


def test_a_client_count_four_does_not_divide_still_covers_every_task_once():
    rows = _pool_fixture(30)
    clients = partition(
        rows, rows, tasks=REFERENCE_TASKS, split_strategy="multitask_clusters", num_clients=6
    )
    assert {t for c in clients for t in c.tasks} == set(REFERENCE_TASKS)
    seen = [r["instruction"] for c in clients for r in c.train]
    assert len(seen) == len(set(seen))


# --- 5. Generation and metric ------------------------------------------------------------


def test_extraction_takes_the_text_after_the_last_response_marker():
    prompt = format_prompt("hello")
    for generated in ("Yes", "Yes\n\n### Response: No", "  two words"):
        reference = (prompt + generated).split("### Response: ")[-1]
        assert extract_response(prompt, generated) == reference
    # the default prompt ends at the marker: the model writes the space itself
    assert generation_prompt("hello") == prompt.rstrip(" ")
    assert extract_response(generation_prompt("hello"), " Yes") == "Yes"
    assert generation_prompt("hello", end="exact") == prompt


def test_rouge_is_rouge_score_without_stemming():
    from rouge_score import rouge_scorer

    pred, ref = "the cats were running home", "a cat runs home"
    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    expected = [s.fmeasure for s in plain.score(ref, pred).values()]
    assert rouge_per_sample([pred], [ref])[0].tolist() == pytest.approx(expected)
    stemmed = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True).score(ref, pred)
    assert stemmed["rouge1"].fmeasure > expected[0]  # the pair tells the two apart


# --- 6. Evaluation modes -----------------------------------------------------------------


@pytest.mark.parametrize("mode", EVALUATION_MODES)
def test_each_evaluation_mode_has_the_reference_test_set_and_routing(mode):
    rows = _pool_fixture(40)
    clients = partition(
        rows,
        rows,
        tasks=REFERENCE_TASKS,
        split_strategy="multitask_clusters",
        num_clients=8,
        evaluation_mode=mode,
        seed=1,
    )
    own_data = mode in ("local", "data_local_eval_global")
    for client in clients:
        test_tasks = {r["task"] for r in client.test}
        assert test_tasks == (set(client.tasks) if own_data else set(REFERENCE_TASKS))
    assert routes_globally(mode) == (mode in ("global", "data_local_eval_global"))


# --- 7. Seeds ----------------------------------------------------------------------------


def test_reference_seeding_fixes_everything_but_the_data_order():
    cfg = Config(seed=111)
    assert lora_seed(cfg) == 2025
    assert kmeans_seed(cfg, 3) == (0, "auto")
    assert trainer_seed(cfg, 5, 3) == 42
    run = Config(seed=111, seeding="run")
    assert lora_seed(run) == 111
    assert kmeans_seed(run, 3)[0] != kmeans_seed(run, 4)[0]


def test_round_subsample_is_seeded_by_the_round_alone():
    rows = [{"instruction": f"x{i}", "response": "y", "task": "t"} for i in range(50)]
    for server_round in (1, 7):
        ds = Dataset.from_list(rows).shuffle(seed=server_round)
        random.seed(server_round)
        picks = random.sample(range(len(ds)), 16)
        expected = ds.select(picks).to_list()
        assert reference_round_sample(rows, 16, server_round) == expected
    assert len(reference_round_sample(rows[:5], 16, 2)) == 5


# --- 8. Learning rate over rounds --------------------------------------------------------


def test_cosine_learning_rate_takes_the_one_based_round():
    lr, low, rounds = 5e-4, 1e-5, 25
    first = cosine_lr(1, rounds, lr, low)
    assert first < lr
    assert first == pytest.approx(low + 0.5 * (lr - low) * (1 + math.cos(math.pi / rounds)))
    assert cosine_lr(rounds, rounds, lr, low) == pytest.approx(low)


# --- 9. Local training schedule ----------------------------------------------------------


def test_local_schedule_round_robin_and_all():
    from fedrouter.strategies.fedrouter import ClusteredStrategy

    for schedule, expected in (("round_robin", [[1], [0], [1]]), ("all", [[0, 1]] * 3)):
        strategy = ClusteredStrategy(Config(n_clusters=2, local_schedule=schedule))
        strategy.assignment = {7: np.array([2, 0])}
        assert [strategy.local_clusters(7, r) for r in (1, 2, 3)] == expected


# --- 10. Kept on purpose -----------------------------------------------------------------


def test_sample_clients_is_honoured():
    from fedrouter.strategies.aggregation import sample_nodes

    picked = sample_nodes(list(range(8)), 3, seed=1, server_round=2)
    assert len(picked) == 3 and len(set(picked)) == 3


def test_10e_checkpointing_is_decided_by_memory_and_on_restores_the_reference():
    """The reference always checkpoints; ``auto`` does where memory needs it, ``on`` always."""
    from fedrouter.config import Config
    from fedrouter.training import TrainSettings, checkpointing_needed

    geometry = type("Llama1B", (), {"hidden_size": 2048, "num_hidden_layers": 16})()
    h200 = 141 * 2**30
    assert Config().gradient_checkpointing == "auto"
    settings = TrainSettings.from_config(Config(client_resources_gpus=0.25))
    # the reference's settings: batch 16 of ~150-token rows, 4 clients sharing an H200
    tokens = settings.batch_size * 150
    assert not checkpointing_needed(
        settings.gradient_checkpointing, tokens, geometry, settings.gpu_share, h200
    )
    # a 24 GB card shared by 4: the same batch no longer fits a fifth of a share
    assert checkpointing_needed(settings.gradient_checkpointing, tokens, geometry, 0.25, 24 * 2**30)
    on = TrainSettings.from_config(Config(gradient_checkpointing="on"))
    assert checkpointing_needed(on.gradient_checkpointing, 1, geometry, on.gpu_share, h200)
