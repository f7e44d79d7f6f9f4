"""Tests for fedrouter.data: templates, registry, synthetic benchmark, loaders, partitioning."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from fedrouter.data import (
    DATASET_NAMES,
    SPLIT_STRATEGIES,
    SYNTHETIC_TASKS,
    TEMPLATE_NAMES,
    DataError,
    client_tasks,
    format_prompt,
    generate_synthetic,
    load_benchmark,
    load_client_data,
    partition,
    synthetic,
    synthetic_texts,
    tasks_for,
)
from fedrouter.data.synthetic import CITIES, FIRST_NAMES

TASKS4 = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    """Return the default synthetic benchmark."""
    return load_benchmark("multitask_synthetic")


def _by_task(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        grouped.setdefault(row["task"], []).append(row)
    return grouped


def _split(rows, strategy, num_clients=8, **kwargs):
    args = dict(
        split_strategy=strategy,
        num_clients=num_clients,
        train_split=0.8,
        max_data_per_client=600,
        max_eval_size=300,
        evaluation_mode="local",
        seed=0,
    )
    args.update(kwargs)
    return partition(rows, **args)


# --- Templates ---------------------------------------------------------------------------


def test_alpaca_prompt_ends_where_the_response_starts():
    prompt = format_prompt("Say hi {politely}", template="alpaca")
    assert prompt.startswith("Below is an instruction")
    assert "### Instruction:\nSay hi {politely}\n\n" in prompt
    assert prompt.endswith("### Response:\n")
    assert "alpaca" in TEMPLATE_NAMES


def test_unknown_template_names_it_and_the_valid_ones():
    with pytest.raises(DataError, match=r"'vicuna'.*alpaca"):
        format_prompt("x", template="vicuna")


# --- Registry ----------------------------------------------------------------------------


def test_registry_lists_both_benchmarks():
    assert set(DATASET_NAMES) == {"multitask", "multitask_synthetic"}
    assert [t.name for t in tasks_for("multitask")] == ["qqp", "webnlg", "samsum", "gigaword"]
    assert tuple(t.name for t in tasks_for("multitask_synthetic")) == SYNTHETIC_TASKS
    with pytest.raises(DataError, match="'nope'"):
        tasks_for("nope")


# --- Synthetic benchmark -----------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed():
    synthetic._generate_cached.cache_clear()
    first = generate_synthetic(seed=7, n_per_task=200)
    synthetic._generate_cached.cache_clear()
    assert generate_synthetic(seed=7, n_per_task=200) == first
    assert generate_synthetic(seed=8, n_per_task=200) != first


def test_synthetic_has_four_families_of_distinct_short_samples(rows):
    grouped = _by_task(rows)
    assert tuple(sorted(grouped)) == tuple(sorted(SYNTHETIC_TASKS))
    assert len(SYNTHETIC_TASKS) == 4
    for task, task_rows in grouped.items():
        assert len({r["instruction"] for r in task_rows}) >= 2000, task
        assert all(set(r) == {"instruction", "response", "task"} for r in task_rows)
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


def test_synthetic_families_have_distinct_instruction_formats(rows):
    first_lines = {
        task: {r["instruction"].split("\n")[0] for r in rs} for task, rs in _by_task(rows).items()
    }
    assert all(len(lines) == 1 for lines in first_lines.values())
    assert len({next(iter(lines)) for lines in first_lines.values()}) == 4


def test_question_pair_responses_are_generative_not_yes_no(rows):
    responses = [r["response"] for r in rows if r["task"] == "paraphrase_synth"]
    assert not {"yes", "no"} & set(responses)
    labels = Counter(r.split(":")[0] for r in responses)
    assert set(labels) == {"duplicate", "different"}
    assert min(labels.values()) > 0.3 * len(responses)
    assert len(set(responses)) > 1000  # the response names the topics, not only the label


def test_synthetic_texts_hold_every_instruction_and_response(rows):
    texts = synthetic_texts()
    assert len(texts) == 2 * len(rows)
    assert rows[0]["instruction"] in texts and rows[0]["response"] in texts


# --- Loading -----------------------------------------------------------------------------


def test_dataset_sample_caps_rows_evenly_and_follows_the_seed():
    rows = load_benchmark("multitask_synthetic", dataset_sample=401, seed=0)
    assert len(rows) == 401
    assert sorted(Counter(r["task"] for r in rows).values()) == [100, 100, 100, 101]
    again = load_benchmark("multitask_synthetic", dataset_sample=401, seed=0)
    other = load_benchmark("multitask_synthetic", dataset_sample=401, seed=1)
    assert again == rows and other != rows


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


def _write_parquet(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_parquet(path)


def _write_hub_layout(root: Path) -> None:
    """Write small files in the Hub's columns for the four real tasks."""
    _write_parquet(
        root / "qqp" / "train-0.parquet",
        [
            {
                "question1": "How do I cook rice?",
                "question2": "How is rice cooked?",
                "label": 1,
                "idx": 0,
            },
            {"question1": "Who is he?", "question2": "Where is it?", "label": 0, "idx": 1},
            {"question1": "Unlabelled?", "question2": "Unlabelled!", "label": -1, "idx": 2},
        ],
    )
    _write_parquet(
        root / "qqp" / "train-1.parquet",
        [{"question1": "Is it hot?", "question2": "Is it warm?", "label": 1, "idx": 3}],
    )
    _write_jsonl(
        root / "webnlg" / "train.jsonl",
        [
            {"gem_id": "w0", "input": ["Ada | birthPlace | London", "Ada | field | Maths"],
             "target": "Ada, born in London, worked in maths."},
            {"gem_id": "w1", "input": ["Oslo | country | Norway"], "target": "Oslo is in Norway."},
        ],
    )  # fmt: skip
    _write_parquet(
        root / "samsum" / "train.parquet",
        [
            {
                "id": "s0",
                "dialogue": "Ann: Lunch?\nBob: Sure.",
                "summary": "Ann and Bob will have lunch.",
            }
        ],
    )
    _write_jsonl(
        root / "gigaword" / "train.jsonl",
        [{"document": "the cabinet resigned on monday .", "summary": "cabinet resigns"}],
    )


def test_local_files_in_the_hub_layout_load(offline, tmp_path):
    _write_hub_layout(tmp_path / "data")
    rows = load_benchmark("multitask", local_data_dir=tmp_path / "data")
    counts = Counter(r["task"] for r in rows)
    assert counts == {"qqp": 3, "webnlg": 2, "samsum": 1, "gigaword": 1}  # label -1 dropped
    assert all(set(r) == {"instruction", "response", "task"} for r in rows)
    qqp = {r["instruction"]: r["response"] for r in rows if r["task"] == "qqp"}
    rice = (
        "Are these two questions asking the same thing?\n"
        "Question 1: How do I cook rice?\nQuestion 2: How is rice cooked?"
    )
    assert qqp[rice] == "yes"
    assert sorted(qqp.values()) == ["no", "yes", "yes"]
    webnlg = next(r for r in rows if r["response"] == "Ada, born in London, worked in maths.")
    assert webnlg["instruction"].endswith("Ada | birthPlace | London\nAda | field | Maths")
    samsum = next(r for r in rows if r["task"] == "samsum")
    assert samsum["instruction"].endswith("Ann: Lunch?\nBob: Sure.")
    assert samsum["response"] == "Ann and Bob will have lunch."
    gigaword = next(r for r in rows if r["task"] == "gigaword")
    assert gigaword["response"] == "cabinet resigns"


def test_local_file_missing_a_column_names_file_and_column(offline, tmp_path):
    _write_hub_layout(tmp_path / "data")
    bad = tmp_path / "data" / "samsum" / "train.parquet"
    _write_parquet(bad, [{"id": "s0", "dialogue": "Ann: Hi"}])
    with pytest.raises(DataError, match=r"train\.parquet.*lacks column\(s\) summary"):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")


def test_missing_local_dir_or_task_folder_is_a_clear_error(offline, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_benchmark("multitask", local_data_dir=tmp_path / "absent")
    _write_hub_layout(tmp_path / "data")
    for path in (tmp_path / "data" / "gigaword").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"'gigaword'.*gigaword/\*\.parquet"):
        load_benchmark("multitask", local_data_dir=tmp_path / "data")


def test_unreachable_hub_fails_fast_naming_the_dataset_and_the_fix(offline):
    start = time.monotonic()
    with pytest.raises(DataError) as excinfo:
        load_benchmark("multitask", dataset_sample=100, seed=123)
    assert time.monotonic() - start < 10  # no network retries
    message = str(excinfo.value)
    assert "nyu-mll/glue" in message and "'qqp'" in message
    assert "--local_data_dir" in message


# --- Partitioning ------------------------------------------------------------------------


def test_client_tasks_follow_the_documented_assignment():
    assert client_tasks("multitask_iid", TASKS4, 8) == [TASKS4] * 8
    assert client_tasks("multitask_clusters", TASKS4, 8) == [(TASKS4[i % 4],) for i in range(8)]
    multi = client_tasks("multitask_multi_domain", TASKS4, 8)
    assert [set(ts) for ts in multi] == [{TASKS4[i % 4], TASKS4[(i + 1) % 4]} for i in range(8)]
    # Not a multiple of the task count: spread as evenly as possible.
    assert Counter(t for (t,) in client_tasks("multitask_clusters", TASKS4, 6)) == {
        "a": 2, "b": 2, "c": 1, "d": 1,
    }  # fmt: skip


@pytest.mark.parametrize("strategy", SPLIT_STRATEGIES)
def test_each_strategy_gives_documented_tasks_and_disjoint_clients(rows, strategy):
    clients = _split(rows, strategy)
    tasks = sorted({r["task"] for r in rows})
    expected = client_tasks(strategy, tasks, 8)
    assert [c.tasks for c in clients] == [tuple(sorted(ts)) for ts in expected]
    seen: set[str] = set()
    for client in clients:
        mine = [r["instruction"] for r in client.train + client.test]
        assert len(mine) == len(set(mine))  # train and test disjoint within the client
        assert seen.isdisjoint(mine)  # and no row in two clients
        seen.update(mine)
        assert {r["task"] for r in client.test} <= set(client.tasks)


@pytest.mark.parametrize("strategy", SPLIT_STRATEGIES)
def test_split_is_deterministic_per_seed_and_differs_across_seeds(rows, strategy):
    first = _split(rows, strategy, seed=3)
    assert _split(rows, strategy, seed=3) == first
    assert _split(rows, strategy, seed=4) != first


def test_caps_are_honoured(rows):
    capped = _split(rows, "multitask_multi_domain", max_data_per_client=50, max_eval_size=20)
    assert all(len(c.train) == 50 and len(c.test) == 20 for c in capped)
    uncapped = _split(
        rows, "multitask_iid", num_clients=4, max_data_per_client=-1, max_eval_size=-1
    )
    assert [len(c.train) for c in uncapped] == [2000] * 4
    assert [len(c.test) for c in uncapped] == [500] * 4


def test_global_eval_covers_all_tasks_balanced_and_apart_from_training(rows):
    clients = _split(rows, "multitask_clusters", evaluation_mode="global", max_eval_size=100)
    trained = {r["instruction"] for c in clients for r in c.train}
    tested: set[str] = set()
    for client in clients:
        counts = Counter(r["task"] for r in client.test)
        assert set(counts) == set(SYNTHETIC_TASKS)
        assert max(counts.values()) - min(counts.values()) <= 1
        assert len(client.test) == 100
        instructions = {r["instruction"] for r in client.test}
        assert trained.isdisjoint(instructions)
        assert tested.isdisjoint(instructions)
        tested |= instructions
        assert len(client.tasks) == 1  # training stays on the client's own task


def test_too_few_clients_for_the_tasks_names_the_value(rows):
    with pytest.raises(DataError, match=r"multitask_clusters.*num_clients=3"):
        _split(rows, "multitask_clusters", num_clients=3)
    with pytest.raises(DataError, match=r"num_clients=2"):
        client_tasks("multitask_multi_domain", TASKS4, 2)
    with pytest.raises(DataError, match=r"num_clients must be >= 1, got 0"):
        client_tasks("iid", TASKS4, 0)


def test_unknown_strategy_names_it_and_the_valid_ones(rows):
    with pytest.raises(DataError, match=r"'by_vibes'.*multitask_clusters"):
        _split(rows, "by_vibes")


def test_empty_client_partition_names_the_client_and_strategy(rows):
    few = rows[:3] + [r for r in rows if r["task"] == "headline_synth"][:3]
    with pytest.raises(DataError, match=r"Client \d+ of 8 under iid"):
        _split(few, "iid")


def test_bad_split_arguments_are_rejected(rows):
    with pytest.raises(DataError, match="train_split"):
        _split(rows, "iid", train_split=1.0)
    with pytest.raises(DataError, match="evaluation_mode"):
        _split(rows, "iid", evaluation_mode="both")


def test_load_client_data_is_cached_and_matches_partition(rows):
    args = dict(
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
    clients = load_client_data(**args)
    again = load_client_data(**args)
    assert again == clients and again[0] is clients[0]
    assert clients == _split(rows, "multitask_clusters", num_clients=4, max_data_per_client=100,
                             max_eval_size=30, seed=5)  # fmt: skip
