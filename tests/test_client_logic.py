"""Client-side logic on the tiny model: local clustering purity, routed evaluation."""

import numpy as np
import pytest

import fedrouter.client_logic as client_logic
import fedrouter.evaluation as evaluation
from fedrouter.client_logic import cluster_locally, embed_instructions, evaluate_routed
from fedrouter.clustering import cluster_purity
from fedrouter.data import load_client_data
from fedrouter.evaluation import rouge_per_sample


@pytest.fixture(scope="module")
def multi_domain_clients():
    # phrased: the task sentence leads each instruction. The raw inputs alone (the default)
    # do not separate every task pair in a random-weight tiny model's embeddings.
    return load_client_data(
        dataset_name="multitask_synthetic", local_data_dir=None, dataset_sample=400000,
        split_strategy="multitask_multi_domain", num_clients=4, train_split=0.8,
        max_data_per_client=200, max_eval_size=16, evaluation_mode="local", seed=111,
        instruction_format="phrased",
    )  # fmt: skip


def test_local_kmeans_separates_each_clients_two_tasks(fresh_qlora, multi_domain_clients):
    model, tokenizer, _ = fresh_qlora
    purities = []
    for pid, part in enumerate(multi_domain_clients):
        assert len(part.tasks) == 2
        emb = embed_instructions(model, tokenizer, part.train, batch_size=64, max_length=256)
        tasks = [r["task"] for r in part.train]
        # the reference's k-means (random_state 0, one k-means++ run) and the run seeding's
        for seed, n_init in ((0, "auto"), (111 + pid, 10)):
            local = cluster_locally(emb, tasks, n_clusters=2, seed=seed, n_init=n_init)
            purities.append(cluster_purity(local.labels, np.array(tasks)))
            assert sorted(local.tasks) == sorted(part.tasks)  # one cluster per task
    assert min(purities) >= 0.9, purities


def test_embeddings_ignore_the_adapter(fresh_qlora, multi_domain_clients):
    from fedrouter.models import adapter_to_arrays, arrays_to_adapter

    model, tokenizer, init = fresh_qlora
    rows = multi_domain_clients[0].train[:8]
    before = embed_instructions(model, tokenizer, rows, batch_size=4, max_length=256)
    arrays_to_adapter(model, {k: v + 0.5 for k, v in adapter_to_arrays(model).items()})
    after = embed_instructions(model, tokenizer, rows, batch_size=3, max_length=256)
    np.testing.assert_allclose(before, after, rtol=1e-4, atol=1e-5)  # batch size may differ


def test_oracle_clusters_follow_the_task_label():
    emb = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    local = cluster_locally(emb, ["b", "a", "b", "a", "a", "b"], n_clusters=2, seed=0, oracle=True)
    assert local.tasks == ("a", "b")
    assert local.labels.tolist() == [1, 0, 1, 0, 0, 1]
    np.testing.assert_allclose(local.centroids[0], emb[[1, 3, 4]].mean(0), rtol=1e-6)


def test_evaluate_routed_swaps_once_per_cluster_and_scores(fresh_qlora, multi_domain_clients):
    model, tokenizer, _ = fresh_qlora
    rows = multi_domain_clients[1].test[:6]
    routes = np.array([3, 1, 3, 1, 3, 1])
    activated = []
    result = evaluate_routed(
        model, tokenizer, rows, routes, activated.append,
        cluster_tasks=["x", rows[1]["task"], "y", rows[0]["task"]], template="alpaca_short",
        batch_size=4, max_new_tokens=4, max_length=256,
    )  # fmt: skip
    assert sorted(activated) == [1, 3]  # one adapter swap per routed cluster, not per sample
    metrics = result.metrics()
    assert metrics["count/c1"] == 3 and metrics["count/c3"] == 3
    expected = np.mean(
        [rows[i]["task"] == ["x", rows[1]["task"], "y", rows[0]["task"]][g]
         for i, g in enumerate(routes)]
    )  # fmt: skip
    assert metrics["routing-accuracy"] == pytest.approx(expected)
    assert 0.0 <= metrics["rouge1"] <= 1.0 and metrics["generated-tokens"] > 0


@pytest.mark.parametrize(
    ("prompt_end", "prompt_ends_with", "lead"),
    [("marker", "### Response:", " "), ("exact", "### Response: ", "")],
)
def test_evaluate_routed_prompts_and_answer_extraction(
    monkeypatch, prompt_end, prompt_ends_with, lead
):
    rows = [
        {"instruction": "alpha beta", "response": "gamma delta", "task": "a"},
        {"instruction": "one two", "response": "three four five", "task": "b"},
    ]
    prompts = []

    def fake_generate(model, tokenizer, batch, **kwargs):
        # each generation rambles, then starts a new response section: the answer is the
        # text after the last "### Response: " of prompt + generation, as in the reference
        prompts.extend(batch)
        answers = {p: r["response"] for p in batch for r in rows if r["instruction"] in p}
        return [f"{lead}noise words\n\n### Response: {answers[p]}" for p in batch]

    monkeypatch.setattr(evaluation, "generate", fake_generate)
    result = evaluate_routed(
        None, None, rows, np.array([0, 1]), lambda g: None, cluster_tasks=["a", "b"],
        template="alpaca_short", batch_size=2, max_new_tokens=8, max_length=64,
        prompt_end=prompt_end,
    )  # fmt: skip
    assert len(prompts) == 2 and all(p.endswith(prompt_ends_with) for p in prompts)
    np.testing.assert_allclose(result.scores, 1.0)  # the extracted answers are the references
    assert result.metrics()["routing-accuracy"] == 1.0


def test_rouge_does_not_stem():
    # with a stemmer "running" and "run" would both be "run": ROUGE-1 of 1
    scores = rouge_per_sample(["running dogs", "the cat"], ["run dog", "the cat"])
    np.testing.assert_allclose(scores[0], 0.0)
    np.testing.assert_allclose(scores[1], 1.0)


def test_oracle_routes_to_an_allowed_cluster_of_the_true_task_else_keeps_the_route():
    rows = [{"task": "a"}, {"task": "b"}, {"task": "c"}]
    routes = client_logic.oracle_routes(
        rows, np.array([0, 2]), ["a", "x", "b"], fallback=np.array([2, 0, 0])
    )
    assert routes.tolist() == [0, 2, 0]  # "c" has no allowed cluster: its route stays


def test_two_local_clusters_of_one_global_cluster_average_by_examples():
    one = {"w": np.array([1.0, 2.0])}
    two = {"w": np.array([4.0, 8.0])}
    mean = client_logic.average_arrays([(one, 10), (two, 30)])
    np.testing.assert_allclose(mean["w"], [3.25, 6.5])  # (1*10 + 4*30) / 40, (2*10 + 8*30) / 40
    assert client_logic.average_arrays([(one, 10)]) is one


def test_feddpa_scales_only_the_lora_b_matrices():
    arrays = {"x.lora_A.weight": np.ones(2), "x.lora_B.weight": np.ones(2)}
    scaled = client_logic.scale_lora_b(arrays, 0.25)
    np.testing.assert_allclose(scaled["x.lora_A.weight"], 1.0)
    np.testing.assert_allclose(scaled["x.lora_B.weight"], 0.25)
