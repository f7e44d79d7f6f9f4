"""Tests for fedrouter.data: templates, registry, synthetic benchmark, loaders, partitioning.

The reference's exact strings and assignments on real rows live in test_fidelity.py; these
tests cover the general mechanics.
"""

from __future__ import annotations

import ast
import json
import logging
import random
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fedrouter.data import (
    DATASET_NAMES,
    EVALUATION_MODES,
    INSTRUCTION_FORMATS,
    SPLIT_STRATEGIES,
    SYNTHETIC_TASKS,
    TEMPLATE_NAMES,
    DataError,
    Pools,
    TaskSpec,
    client_data_for,
    client_tasks,
    format_prompt,
    generate_synthetic,
    load_benchmark,
    load_client_data,
    loaders,
    partition,
    routes_globally,
    synthetic,
    synthetic_texts,
    tasks_for,
)
from fedrouter.data.synthetic import CITIES, FIRST_NAMES, SYNTHETIC_PHRASING
from fedrouter.data.templates import (
    GENERATION_PROMPTS,
    extract_response,
    generation_prompt,
    get_template,
    prompt_through_marker,
)

TASKS4 = ("a", "b", "c", "d")
N_PER_TASK = 2500  # synthetic.DEFAULT_N_PER_TASK: 10,000 rows, 8,000 train and 2,000 test


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    """Return the default synthetic benchmark, in family order."""
    return generate_synthetic()


@pytest.fixture(scope="module")
def pools() -> Pools:
    """Return the default synthetic benchmark's train and test pools."""
    return load_benchmark("multitask_synthetic")


def _by_task(rows) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        grouped.setdefault(row["task"], []).append(row)
    return grouped


def _key(row: dict[str, str]) -> tuple[str, str]:
    """Identify a row (instructions are distinct within a task)."""
    return row["task"], row["instruction"]


def _split(pools, strategy, num_clients=8, **kwargs):
    args = dict(
        tasks=SYNTHETIC_TASKS,
        split_strategy=strategy,
        num_clients=num_clients,
        max_data_per_client=600,
        max_eval_size=300,
        evaluation_mode="local",
        seed=0,
    )
    args.update(kwargs)
    return partition(pools.train, pools.test, **args)


# --- Templates ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_template_prompts_nest_and_keep_the_instruction_verbatim(name):
    instruction = "Say hi {politely}\n  with spaces  "
    template = get_template(name)
    prompt = format_prompt(instruction, template=name)
    head = prompt_through_marker(instruction, template=name)
    assert instruction in prompt  # braces and whitespace are not touched
    assert prompt.startswith(head) and head.endswith(template.marker)
    assert prompt.index(instruction) < len(head)  # the instruction precedes the marker
    assert generation_prompt(instruction, name, end="exact") == prompt
    assert generation_prompt(instruction, name, end="marker") == head
    assert template.training_text(instruction, "Hi.", "</s>") == prompt + "Hi.</s>"
    assert set(GENERATION_PROMPTS) == {"marker", "exact"}


def test_extract_response_takes_the_text_after_the_last_marker():
    instruction = "What follows ### Response:?"  # a marker inside the instruction is skipped
    marker_prompt = generation_prompt(instruction, "alpaca", end="marker")
    exact_prompt = generation_prompt(instruction, "alpaca", end="exact")
    assert extract_response(marker_prompt, " Yes", "alpaca") == "Yes"  # the space is dropped
    assert extract_response(marker_prompt, "Yes", "alpaca") == "Yes"  # no space written
    assert extract_response(exact_prompt, "No", "alpaca") == "No"
    # A model that writes the template again is read after its last marker.
    assert extract_response(exact_prompt, "x\n### Response: Maybe", "alpaca") == "Maybe"


def test_unknown_template_or_prompt_end_names_it_and_the_valid_ones():
    with pytest.raises(DataError, match=r"'vicuna'.*alpaca"):
        format_prompt("x", template="vicuna")
    with pytest.raises(DataError, match=r"'newline'.*marker.*exact"):
        generation_prompt("x", "alpaca", end="newline")


# --- Registry ----------------------------------------------------------------------------


def test_registry_lists_both_benchmarks_in_split_order():
    assert set(DATASET_NAMES) == {"multitask", "multitask_synthetic"}
    assert [t.name for t in tasks_for("multitask")] == ["qqp", "gigaword", "samsum", "webnlg"]
    assert SYNTHETIC_TASKS == (
        "paraphrase_synth",
        "headline_synth",
        "dialogsum_synth",
        "data2text_synth",
    )
    assert tuple(t.name for t in tasks_for("multitask_synthetic")) == SYNTHETIC_TASKS
    with pytest.raises(DataError, match="'nope'"):
        tasks_for("nope")


def test_every_task_has_its_own_phrasing_sentence():
    assert INSTRUCTION_FORMATS == ("raw", "phrased")
    for name in DATASET_NAMES:
        specs = tasks_for(name)
        phrasings = [spec.phrasing for spec in specs]
        assert all(p.strip() for p in phrasings), name
        assert len(set(phrasings)) == len(specs), name
        for spec in specs:
            assert spec.phrase("IN") == f"{spec.phrasing}\nIN"


# --- Synthetic benchmark -----------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed():
    synthetic._generate_cached.cache_clear()
    first = generate_synthetic(seed=7, n_per_task=200)
    synthetic._generate_cached.cache_clear()
    assert generate_synthetic(seed=7, n_per_task=200) == first
    assert generate_synthetic(seed=8, n_per_task=200) != first


def test_synthetic_has_four_families_of_distinct_short_samples(rows):
    grouped = _by_task(rows)
    assert list(grouped) == list(SYNTHETIC_TASKS)  # family order
    for task, task_rows in grouped.items():
        assert len(task_rows) == N_PER_TASK, task
        assert len({r["instruction"] for r in task_rows}) == N_PER_TASK, task
        assert all(set(r) == {"instruction", "response", "task"} for r in task_rows)
        assert all(r["instruction"].strip() and r["response"].strip() for r in task_rows)
        assert max(len(r["instruction"].split()) for r in task_rows) <= 60, task
        assert max(len(r["response"].split()) for r in task_rows) <= 20, task


def test_synthetic_families_share_vocabulary(rows):
    texts = {task: " ".join(r["instruction"] for r in rs) for task, rs in _by_task(rows).items()}
    shared_cities = [c for c in CITIES if all(re.search(rf"\b{c}\b", t) for t in texts.values())]
    shared_names = [
        n for n in FIRST_NAMES if all(re.search(rf"\b{n}\b", t) for t in texts.values())
    ]
    assert len(shared_cities) >= 10
    assert len(shared_names) >= 10


def test_synthetic_instructions_are_raw_inputs_in_each_tasks_shape(rows):
    grouped = _by_task(rows)
    phrasings = tuple(SYNTHETIC_PHRASING.values())
    assert set(SYNTHETIC_PHRASING) == set(SYNTHETIC_TASKS)
    assert not any(r["instruction"].startswith(phrasings) for r in rows)  # no task wording
    for row in grouped["paraphrase_synth"]:  # QQP's "question1-question2"
        assert re.fullmatch(r"[^\n]+\?-[^\n]+\?", row["instruction"]), row
    for row in grouped["data2text_synth"]:  # WebNLG's str(list of triples)
        triples = ast.literal_eval(row["instruction"])
        assert isinstance(triples, list) and 2 <= len(triples) <= 4, row
        assert all(len(t.split(" | ")) == 3 for t in triples), row
        assert str(triples) == row["instruction"]
        assert len({t.split(" | ")[0] for t in triples}) == 1  # one subject
    for row in grouped["dialogsum_synth"]:  # SAMSum's bare dialogue: "Name: text" lines
        lines = row["instruction"].split("\n")
        assert 2 <= len(lines) <= 4, row
        assert all(re.match(r"[A-Z][a-z]+: \S", line) for line in lines), row
    for row in grouped["headline_synth"]:  # Gigaword's bare sentence
        assert "\n" not in row["instruction"] and row["instruction"].endswith("."), row


def test_question_pair_responses_are_generative_not_yes_no(rows):
    responses = [r["response"] for r in rows if r["task"] == "paraphrase_synth"]
    assert not {"yes", "no", "Yes", "No"} & set(responses)
    labels = Counter(r.split(":")[0] for r in responses)
    assert set(labels) == {"duplicate", "different"}
    assert min(labels.values()) > 0.3 * len(responses)
    assert len(set(responses)) > 1000  # the response names the topics, not only the label


def test_synthetic_texts_hold_every_instruction_and_response(rows):
    texts = synthetic_texts()
    assert len(texts) == 2 * len(rows)
    assert rows[0]["instruction"] in texts and rows[0]["response"] in texts
    assert rows[-1]["instruction"] in texts and rows[-1]["response"] in texts


# --- Pools -------------------------------------------------------------------------------


def test_pools_are_disjoint_cover_the_benchmark_and_follow_the_ceil_rule(rows, pools):
    # 10,000 rows; n_test = ceil(0.2 * 10,000) = 2,000
    assert (len(pools.train), len(pools.test)) == (8000, 2000)
    train, test = {_key(r) for r in pools.train}, {_key(r) for r in pools.test}
    assert len(train) == len(pools.train) and len(test) == len(pools.test)
    assert train.isdisjoint(test)
    assert train | test == {_key(r) for r in rows}  # nothing lost, nothing invented
    assert pools.train[0] in rows and pools.test[-1] in rows  # rows are kept unchanged
    # Both pools hold every task in roughly its share (a seeded shuffle, not a task cut).
    for pool in (pools.train, pools.test):
        shares = Counter(r["task"] for r in pool)
        assert set(shares) == set(SYNTHETIC_TASKS)
        assert all(abs(n / len(pool) - 0.25) < 0.05 for n in shares.values())
    # 401 rows: ceil(80.2) = 81 test rows (rounding would give 80)
    small = load_benchmark("multitask_synthetic", dataset_sample=401)
    assert (len(small.train), len(small.test)) == (320, 81)
    # train_split 0.5 of 401: ceil(200.5) = 201 test rows
    half = load_benchmark("multitask_synthetic", dataset_sample=401, train_split=0.5)
    assert (len(half.train), len(half.test)) == (200, 201)


def test_pools_depend_only_on_their_arguments(pools):
    random.seed(99)
    np.random.seed(99)  # global RNG state must not leak into the pools
    loaders._load_cached.cache_clear()
    synthetic._generate_cached.cache_clear()
    again = load_benchmark("multitask_synthetic")
    assert again == pools and again is not pools
    assert load_benchmark("multitask_synthetic") is again  # cached per argument set
    with pytest.raises(TypeError):
        load_benchmark("multitask_synthetic", seed=1)  # no run seed any more
    other_split = load_benchmark("multitask_synthetic", train_split=0.7)
    assert set(map(_key, other_split.test)) != set(map(_key, pools.test))


def test_dataset_sample_cap_is_task_balanced_and_a_no_op_by_default(pools):
    capped = load_benchmark("multitask_synthetic", dataset_sample=401)
    everything = {_key(r) for r in (*pools.train, *pools.test)}
    kept = [*capped.train, *capped.test]
    assert len(kept) == 401 and {_key(r) for r in kept} <= everything
    # 401 over four tasks of 2,500: 100 each, the one row left to one task
    assert sorted(Counter(r["task"] for r in kept).values()) == [100, 100, 100, 101]
    assert load_benchmark("multitask_synthetic", dataset_sample=-1) == pools
    assert load_benchmark("multitask_synthetic", dataset_sample=10_000) == pools
    # Above the benchmark's 10,000 rows, as the 400,000 default is: every row stays.
    assert load_benchmark("multitask_synthetic", dataset_sample=400_000) == pools


def test_phrased_format_prefixes_each_tasks_phrasing(pools):
    phrased = load_benchmark("multitask_synthetic", instruction_format="phrased")
    for raw_pool, phrased_pool in ((pools.train, phrased.train), (pools.test, phrased.test)):
        assert len(phrased_pool) == len(raw_pool)
        for raw, row in zip(raw_pool, phrased_pool, strict=True):
            sentence = SYNTHETIC_PHRASING[raw["task"]]
            assert row == {**raw, "instruction": f"{sentence}\n{raw['instruction']}"}
    with pytest.raises(DataError, match=r"'bold'.*raw.*phrased"):
        load_benchmark("multitask_synthetic", instruction_format="bold")


def test_task_pool_keeps_pool_size_rows_after_a_seed_0_shuffle():
    source_rows = [{"instruction": str(i), "response": "r", "task": "t"} for i in range(10)]
    source = loaders._RowSource(source_rows)
    kept = loaders._pool(TaskSpec(name="t", benchmark="b", pool_size=4), source)
    assert kept == [source_rows[i] for i in np.random.default_rng(0).permutation(10)[:4]]
    assert len({r["instruction"] for r in kept}) == 4
    for size in (None, 10, 11):  # no pool size, or one the task does not exceed: all, in order
        assert loaders._pool(TaskSpec(name="t", benchmark="b", pool_size=size), source) == (
            source_rows
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_split": 1.0}, "train_split"),
        ({"train_split": 0.0}, "train_split"),
        ({"dataset_sample": 0}, "dataset_sample"),
        ({"dataset_sample": -2}, "dataset_sample"),
    ],
)
def test_bad_load_arguments_are_rejected(kwargs, message):
    with pytest.raises(DataError, match=message):
        load_benchmark("multitask_synthetic", **kwargs)


# --- Local files -------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Cut the Hub off and keep the datasets cache inside tmp_path."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # Both libraries read the variables at import time, so patch their constants too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _write_csv(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_csv(path, index=False)


HUB_LAYOUT = Path(__file__).parent / "data" / "hub_layout"


def _write_hub_layout(root: Path) -> None:
    """Copy the small files in the Hub's columns for the four real tasks, one per format.

    tests/data/hub_layout: QQP in two parquet shards (one row unlabelled, -1), WebNLG and
    Gigaword as JSONL (one blank summary), SAMSum as CSV (one empty cell); 7 usable rows.
    scripts/overlap_purity.py --local_data_dir reads the same files.
    """
    shutil.copytree(HUB_LAYOUT, root)


def test_local_files_in_the_hub_layout_load(offline, tmp_path):
    _write_hub_layout(tmp_path / "data")
    pools = load_benchmark("multitask", local_data_dir=tmp_path / "data")
    # 7 usable rows (label -1, an empty CSV cell and a blank summary drop); ceil(1.4) = 2 test
    assert (len(pools.train), len(pools.test)) == (5, 2)
    rows = [*pools.train, *pools.test]
    assert Counter(r["task"] for r in rows) == {"qqp": 3, "webnlg": 2, "samsum": 1, "gigaword": 1}
    assert all(set(r) == {"instruction", "response", "task"} for r in rows)
    qqp = {r["instruction"]: r["response"] for r in rows if r["task"] == "qqp"}
    assert qqp == {
        "How do I cook rice?-How is rice cooked?": "Yes",
        "Who is he?-Where is it?": "No",
        "Is it hot?-Is it warm?": "Yes",  # from the second parquet file
    }
    webnlg = next(r for r in rows if r["response"] == "Ada, born in London, worked in maths.")
    assert ast.literal_eval(webnlg["instruction"]) == [
        "Ada | birthPlace | London",
        "Ada | field | Maths",
    ]
    samsum = next(r for r in rows if r["task"] == "samsum")
    assert samsum == {
        "instruction": "Ann: Lunch?\nBob: Sure.",
        "response": "Ann and Bob will have lunch.",
        "task": "samsum",
    }
    gigaword = next(r for r in rows if r["task"] == "gigaword")
    assert gigaword["instruction"] == " the cabinet resigned on monday ."  # not stripped
    assert gigaword["response"] == "cabinet resigns"


def test_local_file_missing_a_column_names_file_and_column(offline, tmp_path):
    _write_hub_layout(tmp_path / "data")
    bad = tmp_path / "data" / "samsum" / "train.csv"
    _write_csv(bad, [{"id": "s0", "dialogue": "Ann: Hi"}])
    with pytest.raises(DataError, match=r"train\.csv.*lacks column\(s\) summary"):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")


def test_local_task_folder_mixing_formats_is_refused(offline, tmp_path):
    _write_hub_layout(tmp_path / "data")
    _write_jsonl(tmp_path / "data" / "qqp" / "extra.jsonl", [])
    with pytest.raises(DataError, match=r"qqp mixes file formats \(json, parquet\)"):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")


def test_missing_local_dir_or_task_folder_is_a_clear_error(offline, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_benchmark("multitask", local_data_dir=tmp_path / "absent")
    _write_hub_layout(tmp_path / "data")
    for path in (tmp_path / "data" / "gigaword").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"'gigaword'.*gigaword/\*\.parquet"):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")


def test_local_label_of_strings_is_an_error_naming_file_column_and_type(offline, tmp_path):
    _write_hub_layout(tmp_path / "data")
    for path in (tmp_path / "data" / "qqp").iterdir():
        path.unlink()
    rows = [{"question1": "a?", "question2": "b?", "label": word} for word in ("duplicate", "1")]
    _write_csv(tmp_path / "data" / "qqp" / "train.csv", rows)
    with pytest.raises(
        DataError, match=r"'qqp' keeps none of its 2 rows.*qqp/train\.csv.*'label' holds str"
    ):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")


def test_local_summary_of_integers_is_an_error_naming_file_column_and_type(offline, tmp_path):
    _write_hub_layout(tmp_path / "data")
    path = tmp_path / "data" / "gigaword" / "train.jsonl"
    _write_jsonl(path, [{"document": f"text {i} .", "summary": i} for i in range(3)])
    with pytest.raises(DataError, match=r"gigaword/train\.jsonl: column 'summary' holds int"):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")


def test_task_keeping_less_than_half_its_rows_warns_with_the_cause(offline, tmp_path, caplog):
    _write_hub_layout(tmp_path / "data")
    path = tmp_path / "data" / "samsum" / "train.jsonl"
    (tmp_path / "data" / "samsum" / "train.csv").unlink()
    rows = [{"dialogue": "Ann: Hi", "summary": "Ann says hi."}]
    _write_jsonl(path, rows + [{"dialogue": "Bob: Yo", "summary": 7}] * 2)
    with caplog.at_level(logging.WARNING, logger="fedrouter.data.loaders"):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "samsum keeps only 1 of 3 rows" in warning
    assert "2 in " in warning and "train.jsonl: column 'summary' holds int" in warning


def test_webnlg_null_input_or_null_triple_drops_the_row(offline, tmp_path, caplog):
    _write_hub_layout(tmp_path / "data")
    good = {"input": ["Oslo | country | Norway"], "target": "Oslo is in Norway."}
    rows = [good, {"input": None, "target": "t"}, {"input": ["A | b | C", None], "target": "t"}]
    _write_jsonl(tmp_path / "data" / "webnlg" / "train.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="fedrouter.data.loaders"):
        pools = load_benchmark("multitask", local_data_dir=tmp_path / "data")
    webnlg = [r for r in (*pools.train, *pools.test) if r["task"] == "webnlg"]
    assert [r["response"] for r in webnlg] == ["Oslo is in Norway."]
    assert "webnlg keeps only 1 of 3 rows" in caplog.text and "'input' holds" in caplog.text


@pytest.mark.parametrize(("task", "name"), [("gigaword", "train.jsonl"), ("samsum", "train.csv")])
def test_empty_local_file_says_it_is_empty(offline, tmp_path, task, name):
    _write_hub_layout(tmp_path / "data")
    (tmp_path / "data" / task / name).write_text("")
    with pytest.raises(DataError, match=rf"{task}/{name}.*is empty"):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")


def test_csv_with_a_header_and_no_rows_says_it_is_empty(offline, tmp_path):
    _write_hub_layout(tmp_path / "data")
    (tmp_path / "data" / "samsum" / "train.csv").write_text("id,dialogue,summary\n")
    with pytest.raises(DataError, match=r"samsum/train\.csv.*is empty"):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")


def test_non_utf8_byte_in_jsonl_names_the_file_and_line(offline, tmp_path):
    _write_hub_layout(tmp_path / "data")
    path = tmp_path / "data" / "gigaword" / "train.jsonl"
    path.write_bytes(
        b'{"document": "a .", "summary": "a"}\n{"document": "b\xff .", "summary": "b"}\n'
    )
    with pytest.raises(DataError, match=r"gigaword/train\.jsonl, line 2: byte 0xff is not UTF-8"):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")


def test_unreachable_hub_fails_fast_naming_the_dataset_and_the_fix(offline):
    start = time.monotonic()
    with pytest.raises(DataError) as excinfo:
        load_benchmark("multitask", dataset_sample=100)
    assert time.monotonic() - start < 10  # no network retries
    message = str(excinfo.value)
    assert "nyu-mll/glue" in message and "'qqp'" in message
    assert "--local_data_dir" in message


# --- Partitioning ------------------------------------------------------------------------


def test_client_tasks_follow_the_documented_assignment():
    assert client_tasks("iid", TASKS4, 3) == [TASKS4] * 3
    assert client_tasks("multitask_iid", TASKS4, 8) == [TASKS4] * 8
    # Block b = i * 4 // n holds task b; multi-domain adds task b + 1, in registry order.
    assert client_tasks("multitask_clusters", TASKS4, 8) == [
        ("a",), ("a",), ("b",), ("b",), ("c",), ("c",), ("d",), ("d",)
    ]  # fmt: skip
    assert client_tasks("multitask_multi_domain", TASKS4, 4) == [
        ("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")
    ]  # fmt: skip
    # 6 clients: blocks 0, 0, 1, 2, 2, 3
    assert client_tasks("multitask_clusters", TASKS4, 6) == [
        ("a",), ("a",), ("b",), ("c",), ("c",), ("d",)
    ]  # fmt: skip


@pytest.mark.parametrize("strategy", SPLIT_STRATEGIES)
def test_each_strategy_gives_documented_tasks_and_disjoint_clients(pools, strategy):
    clients = _split(pools, strategy)
    expected = client_tasks(strategy, SYNTHETIC_TASKS, 8)
    assert [c.tasks for c in clients] == [tuple(sorted(ts)) for ts in expected]
    train_pool, test_pool = set(map(_key, pools.train)), set(map(_key, pools.test))
    seen_train: set[tuple[str, str]] = set()
    seen_test: set[tuple[str, str]] = set()
    for client in clients:
        train, test = [_key(r) for r in client.train], [_key(r) for r in client.test]
        assert set(train) <= train_pool and set(test) <= test_pool  # test never trains
        assert len(train) == len(set(train)) and len(test) == len(set(test))
        assert seen_train.isdisjoint(train) and seen_test.isdisjoint(test)  # no row shared
        seen_train.update(train)
        seen_test.update(test)


@pytest.mark.parametrize("strategy", SPLIT_STRATEGIES)
@pytest.mark.parametrize("num_clients", [4, 6, 7])
def test_uncapped_split_hands_each_row_to_exactly_one_client(pools, strategy, num_clients):
    clients = _split(
        pools, strategy, num_clients=num_clients, max_data_per_client=-1, max_eval_size=-1
    )
    for pool, share in ((pools.train, "train"), (pools.test, "test")):
        handed = [_key(r) for c in clients for r in getattr(c, share)]
        assert Counter(handed) == Counter(map(_key, pool)), share
    # Every task reaches at least one client, each client holds its documented tasks.
    expected = client_tasks(strategy, SYNTHETIC_TASKS, num_clients)
    assert {t for c in clients for t in c.tasks} == set(SYNTHETIC_TASKS)
    assert [set(c.tasks) for c in clients] == [set(ts) for ts in expected]
    sizes = [len(c.train) for c in clients]
    if strategy in ("iid", "multitask_iid"):
        assert max(sizes) - min(sizes) <= 1  # near-equal contiguous shards


@pytest.mark.parametrize("strategy", SPLIT_STRATEGIES)
def test_split_is_deterministic_per_seed_and_differs_across_seeds(pools, strategy):
    first = _split(pools, strategy, seed=3)
    assert _split(pools, strategy, seed=3) == first
    assert _split(pools, strategy, seed=4) != first


def test_caps_are_honoured(pools):
    capped = _split(pools, "multitask_multi_domain", max_data_per_client=50, max_eval_size=20)
    assert all(len(c.train) == 50 and len(c.test) == 20 for c in capped)
    uncapped = _split(
        pools, "multitask_iid", num_clients=4, max_data_per_client=-1, max_eval_size=-1
    )
    assert [len(c.train) for c in uncapped] == [2000] * 4  # 8,000 / 4
    assert [len(c.test) for c in uncapped] == [500] * 4  # 2,000 / 4


def test_routing_follows_the_evaluation_mode_names():
    assert set(EVALUATION_MODES) == {
        "local",
        "global",
        "data_local_eval_global",
        "data_global_eval_local",
    }
    assert [routes_globally(m) for m in EVALUATION_MODES] == [
        m in ("global", "data_local_eval_global") for m in EVALUATION_MODES
    ]


@pytest.mark.parametrize("strategy", ["multitask_clusters", "multitask_multi_domain"])
@pytest.mark.parametrize("mode", EVALUATION_MODES)
def test_evaluation_mode_sets_each_clients_test_tasks(pools, strategy, mode):
    clients = _split(pools, strategy, evaluation_mode=mode)
    tested: set[tuple[str, str]] = set()
    for client in clients:
        test_tasks = {r["task"] for r in client.test}
        if mode in ("local", "data_local_eval_global"):  # tested on its own data's tasks
            assert test_tasks == set(client.tasks)
        else:  # every client is tested on every task
            assert test_tasks == set(SYNTHETIC_TASKS)
        assert len(client.tasks) < len(SYNTHETIC_TASKS)  # training stays on its own tasks
        keys = set(map(_key, client.test))
        assert tested.isdisjoint(keys)
        tested |= keys


def test_too_few_clients_for_the_tasks_names_the_value(pools):
    with pytest.raises(DataError, match=r"multitask_clusters.*num_clients=3"):
        _split(pools, "multitask_clusters", num_clients=3)
    with pytest.raises(DataError, match=r"num_clients=2"):
        client_tasks("multitask_multi_domain", TASKS4, 2)
    with pytest.raises(DataError, match=r"num_clients must be >= 1, got 0"):
        client_tasks("iid", TASKS4, 0)
    with pytest.raises(DataError, match="at least 2 tasks"):
        client_tasks("multitask_multi_domain", ("a",), 2)


def test_unknown_strategy_or_mode_names_it_and_the_valid_ones(pools):
    with pytest.raises(DataError, match=r"'by_vibes'.*multitask_clusters"):
        _split(pools, "by_vibes")
    with pytest.raises(DataError, match=r"'both'.*data_global_eval_local"):
        _split(pools, "iid", evaluation_mode="both")


def test_bad_rows_or_caps_are_rejected(pools):
    with pytest.raises(DataError, match="exactly the keys"):
        partition(
            [{"instruction": "x", "response": "y"}],
            pools.test,
            tasks=SYNTHETIC_TASKS,
            split_strategy="iid",
            num_clients=1,
        )
    with pytest.raises(DataError, match="no rows"):
        partition([], pools.test, tasks=SYNTHETIC_TASKS, split_strategy="iid", num_clients=1)
    for cap in ("max_data_per_client", "max_eval_size"):
        with pytest.raises(DataError, match=rf"{cap} must be positive or -1"):
            _split(pools, "iid", **{cap: 0})


def test_empty_client_partition_names_the_client_and_strategy(pools):
    # 3 rows over 8 contiguous shards: clients 0-2 get one each, client 3 gets none.
    few = Pools(train=pools.train[:3], test=pools.test[:8])
    with pytest.raises(DataError, match=r"Client 3 of 8 under iid gets 0 train and 1 test"):
        _split(few, "iid")


_RUN = dict(
    dataset_name="multitask_synthetic",
    local_data_dir=None,
    dataset_sample=400_000,
    split_strategy="multitask_clusters",
    num_clients=4,
    train_split=0.8,
    max_data_per_client=100,
    max_eval_size=30,
    evaluation_mode="local",
    seed=5,
)


def test_load_client_data_is_cached_and_matches_partition(pools):
    clients = load_client_data(**_RUN)
    again = load_client_data(**_RUN)
    assert again == clients and again[0] is clients[0]
    assert clients == _split(pools, "multitask_clusters", num_clients=4, max_data_per_client=100,
                             max_eval_size=30, seed=5)  # fmt: skip
    assert load_client_data(**{**_RUN, "seed": 6}) != clients


def test_client_data_for_reads_the_run_config_with_its_instruction_format():
    cfg = SimpleNamespace(**_RUN, instruction_format="phrased", synthetic_overlap=0.0)
    clients = client_data_for(cfg)
    assert clients == load_client_data(**_RUN, instruction_format="phrased")
    assert clients != load_client_data(**_RUN)
    assert all(
        r["instruction"].startswith(SYNTHETIC_PHRASING[r["task"]] + "\n")
        for c in clients
        for r in (*c.train, *c.test)
    )
    assert len(client_data_for(cfg, num_clients=8)) == 8
