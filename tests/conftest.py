"""Shared settings, helpers and fixtures: the tiny run's flags, and an isolated cache holding
the tiny offline model, built once per session."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A small run of the simulation CLI: 4 clients x 2 rounds on the 4-bit tiny model.
SMALL_RUN = [
    "--model_name_or_path", "tiny",
    "--dataset_name", "multitask_synthetic",
    "--num_clients", "4",
    "--sample_clients", "4",
    "--global_n_clusters", "4",
    "--n_clusters", "1",
    "--split_strategy", "multitask_clusters",
    "--num_rounds", "2",
    "--evaluation_rounds", "1,2",
    "--max_steps", "3",
    "--batch_size", "4",
    "--seq_length", "128",
    "--template", "alpaca_short",
    "--max_data_per_client", "40",
    "--max_eval_size", "8",
    "--max_new_tokens", "8",
    "--eval_batch_size", "8",
    "--peft_lora_r", "8",
    "--client_resources_gpus", "0",
    "--load_in_4bit", "True",
    "--seed", "111",
]  # fmt: skip


def run_simulation(tmp_path, *extra):
    """Run the simulation CLI in a subprocess and return (completed process, run dir)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fedrouter.simulation", *SMALL_RUN, "--output_dir", str(out)]
    proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=900)
    runs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
    return proc, (runs[0] if len(runs) == 1 else None)


def write_llama_gguf(model_dir, out_path) -> Path:
    """Write a Llama folder (safetensors + byte-level BPE tokenizer.json) as a float32 GGUF."""
    import gguf
    from safetensors.numpy import load_file

    model_dir, out_path = Path(model_dir), Path(out_path)
    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads

    w = gguf.GGUFWriter(out_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    w.add_name(model_dir.name)  # transformers would treat a name containing "mistral" as Mistral
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_rope_dimension_count(head_dim)  # transformers reads it back as head_dim

    # Tokens in id order; the special added tokens are CONTROL so they stay whole when loaded back.
    special = {t["id"] for t in tok["added_tokens"] if t["special"]}
    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    by_id.update({t["id"]: t["content"] for t in tok["added_tokens"]})
    w.add_tokenizer_model("gpt2")
    # The GPT-2 split regex, which is what ByteLevel(use_regex=True) uses; transformers then keeps
    # GPT2Tokenizer's own pre-tokenizer.
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list([by_id[i] for i in range(len(by_id))])
    control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
    w.add_token_types([control if i in special else normal for i in range(len(by_id))])
    merges = tok["model"]["merges"]  # newer tokenizers store pairs, older ones "a b" strings
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    w.add_bos_token_id(ids["<s>"])
    w.add_eos_token_id(ids["</s>"])
    w.add_pad_token_id(ids["<pad>"])
    w.add_unk_token_id(ids["<unk>"])
    # The folder's tokenizer adds neither; say so rather than leave it to the reader's default.
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    for hf_name, tensor in load_file(model_dir / "model.safetensors").items():
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        # llama.cpp interleaves each head's rotary halves in q and k; transformers undoes it.
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            n = heads if name.endswith("attn_q.weight") else kv_heads
            tensor = tensor.reshape(n, 2, -1, tensor.shape[-1]).swapaxes(1, 2)
            tensor = tensor.reshape(-1, tensor.shape[-1])
        w.add_tensor(name, tensor.astype("float32"))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out_path


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory):
    """Keep tests offline and give them a private model cache (unless one is provided)."""
    os.environ.setdefault("FEDROUTER_CACHE", str(tmp_path_factory.mktemp("fedrouter-cache")))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    yield


@pytest.fixture(scope="session")
def tiny_path(offline_env):
    """Return the folder of the tiny model, building it on first use."""
    from fedrouter.tiny_model import resolve_tiny_model

    return str(resolve_tiny_model())


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_path):
    """Return the path of a float32 GGUF of the tiny model, alone in its own folder."""
    # Alone, so transformers finds no tokenizer_config.json beside it to mix in.
    return write_llama_gguf(tiny_path, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf")


@pytest.fixture(scope="session")
def qlora_model(tiny_path):
    """Return (model, tokenizer, initial adapter arrays) of the 4-bit tiny model with LoRA."""
    from fedrouter.models import ModelSpec, adapter_to_arrays, load_model_and_tokenizer

    spec = ModelSpec(tiny_path, load_in_4bit=True, lora_r=16, lora_alpha=32, seed=0)
    model, tokenizer = load_model_and_tokenizer(spec)
    return model, tokenizer, adapter_to_arrays(model)


@pytest.fixture()
def fresh_qlora(qlora_model):
    """Return the shared model with its adapter reset to the initial arrays."""
    from fedrouter.models import arrays_to_adapter

    model, tokenizer, init = qlora_model
    arrays_to_adapter(model, init)
    return model, tokenizer, init


@pytest.fixture()
def flower_server_identity():
    """Give messages built outside a Flower runtime the identity a ServerApp's runtime sets.

    A Message built with a destination takes its run and source node from TaskIdentity, which
    Flower's runtimes set, through its public setters, before they run an app. A strategy
    called directly in a test needs the same; the previous values come back afterwards.
    """
    from flwr.supercore.task_identity import TaskIdentity

    names = ("run_id", "node_id", "task_id")
    before = {}
    for name in names:
        try:
            before[name] = getattr(TaskIdentity, name)
        except RuntimeError:  # not set: its getter refuses
            before[name] = None
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    yield
    for name, value in before.items():
        setattr(TaskIdentity, name, value)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, tiny_path):
    """One small FedRouter run (SMALL_RUN), shared by every test that reads a finished run."""
    proc, run_dir = run_simulation(tmp_path_factory.mktemp("sim"), "--sim_alias", "e2e")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, run_dir
