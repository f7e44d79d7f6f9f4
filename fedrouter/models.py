"""Base model + tokenizer (4-bit when asked), LoRA wrap, and adapter <-> arrays."""

from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from fedrouter.model_sources import ModelLoadError, check_source, resolve_model_path
from fedrouter.seeding import lora_seed

logger = logging.getLogger(__name__)

ADAPTER = "default"  # PEFT's name for the first adapter; the one every strategy trains


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides which base model and LoRA layout a process holds."""

    model_name_or_path: str
    load_in_4bit: bool = True
    load_in_8bit: bool = False
    use_peft: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("peft-default",)
    seed: int = 0  # seeds the LoRA A init, so every process starts from the same adapter

    @classmethod
    def from_config(cls, cfg) -> ModelSpec:
        """Take the model fields of a ``Config``."""
        return cls(
            model_name_or_path=cfg.model_name_or_path,
            load_in_4bit=cfg.load_in_4bit,
            load_in_8bit=cfg.load_in_8bit,
            use_peft=cfg.use_peft,
            lora_r=cfg.peft_lora_r,
            lora_alpha=cfg.peft_lora_alpha,
            lora_dropout=cfg.lora_dropout,
            lora_target_modules=tuple(cfg.lora_target_modules),
            seed=lora_seed(cfg),
        )


# Process-level cache and load counter: the base model is loaded once per process.
_CACHE: dict[ModelSpec, tuple[object, object]] = {}
LOAD_STATS = {"count": 0, "seconds": 0.0}


def _quantization_config(spec: ModelSpec, compute_dtype):
    from transformers import BitsAndBytesConfig

    if spec.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if spec.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def compute_dtype():
    """Return bf16 on a GPU that supports it, else float32 (CPU bf16 matmuls are slow)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def disable_cpu_repacking(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights in place during CPU inference.

    On CPUs with AVX512-BF16, bitsandbytes converts each ``Linear4bit`` to a packed layout on
    its first eval-mode no-grad forward; after that, LoRA layers above it silently get no
    gradient. Turning the fast path off keeps one weight layout for training and inference.
    """
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_tokenizer(path: str):
    """Load a tokenizer and make sure it can pad."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(spec: ModelSpec):
    """Load the base model (quantized when asked), wrap it in LoRA, and return (model, tok)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_source(spec.model_name_or_path)
    path = resolve_model_path(spec.model_name_or_path)
    start = time.perf_counter()
    dtype = compute_dtype()
    quant = _quantization_config(spec, dtype)
    device_map = {"": torch.cuda.current_device()} if torch.cuda.is_available() else None
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, quantization_config=quant, dtype=dtype, device_map=device_map
        )
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load model '{spec.model_name_or_path}': {str(exc).splitlines()[0]} "
            "(offline? pass a local folder, a .gguf file, or model_name_or_path=tiny)"
        ) from exc
    model.config.use_cache = True
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        # Gradient checkpointing is decided per training call (fedrouter.training).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        disable_cpu_repacking(model)
    if spec.use_peft:
        model = add_lora(model, spec)
    LOAD_STATS["count"] += 1
    LOAD_STATS["seconds"] += time.perf_counter() - start
    logger.info(
        "loaded base model %s (4bit=%s) in %.2fs",
        path,
        spec.load_in_4bit,
        time.perf_counter() - start,
    )
    return model, tokenizer


def peft_target_modules(targets) -> str | list[str] | None:
    """Return ``target_modules`` for PEFT: None (its default for the model), a keyword, or names."""
    targets = list(targets)
    if targets == ["peft-default"]:
        return None
    return "all-linear" if targets == ["all-linear"] else targets


def default_lora_targets(model_type: str) -> tuple[str, ...]:
    """Return PEFT's default LoRA modules for an architecture (``llama``: q_proj, v_proj)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    try:
        return tuple(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])
    except KeyError:
        raise ModelLoadError(
            f"PEFT has no default LoRA modules for model type '{model_type}'; "
            "set lora_target_modules (e.g. all-linear, or a comma list of module names)"
        ) from None


def lora_config(spec: ModelSpec, base_model_name_or_path: str | None = None):
    """Return the PEFT ``LoraConfig`` of ``spec``."""
    from peft import LoraConfig

    return LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=peft_target_modules(spec.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path,
    )


def add_lora(model, spec: ModelSpec, adapter_name: str = ADAPTER):
    """Wrap ``model`` in LoRA (or add a further adapter to a PEFT model), seeded."""
    import torch
    from peft import PeftModel, get_peft_model

    check_lora_targets(model, spec.lora_target_modules)
    torch.manual_seed(spec.seed)
    config = lora_config(spec, spec.model_name_or_path)
    if isinstance(model, PeftModel):
        model.add_adapter(adapter_name, config)
    else:
        model = get_peft_model(model, config, adapter_name=adapter_name)
    keep_adapter_float32(model)
    return model


def ensure_adapter_slot(model, spec: ModelSpec, name: str) -> None:
    """Give the PEFT model an inference-only adapter slot ``name`` (once), leaving the rest.

    The slot is filled by ``arrays_to_adapter(model, arrays, name)``; its initial values never
    matter, so the global RNG is left as it was. The trained slot stays the active one.
    """
    import torch

    if name in model.peft_config:
        return
    with torch.random.fork_rng(devices=[]):
        model.add_adapter(name, lora_config(spec, spec.model_name_or_path))
    for key, param in model.named_parameters():
        if f".{name}." in key:
            param.requires_grad_(False)
            param.data = param.data.float()


def linear_module_names(model) -> list[str]:
    """Return the distinct last names of the model's linear layers (what LoRA can wrap)."""
    import torch

    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            # transformers' Conv1D (GPT-2) is a linear layer too
            if name and (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D")
        }
    )


def check_lora_targets(model, targets) -> None:
    """Raise a ModelLoadError when a named LoRA target matches no module of the model.

    PEFT fails only when no target matches, and then with a traceback; a typo beside a valid
    name would silently leave that layer out.
    """
    names = peft_target_modules(targets)
    if not isinstance(names, list):
        return  # None (PEFT's default) or all-linear: PEFT resolves them for the model
    modules = [name for name, _ in model.named_modules() if name]
    missing = [t for t in names if not any(m == t or m.endswith(f".{t}") for m in modules)]
    if missing:
        raise ModelLoadError(
            f"lora_target_modules names no module of the model: {', '.join(missing)}; "
            f"its linear modules are {', '.join(linear_module_names(model))} "
            "(or use peft-default or all-linear)"
        )


def get_model_and_tokenizer(spec: ModelSpec):
    """Return this process's model and tokenizer for ``spec``, loading them on first use."""
    if spec not in _CACHE:
        _CACHE[spec] = load_model_and_tokenizer(spec)
        # The model lives as long as the process: move it (and everything loaded so far) out
        # of the cyclic collector's reach. accelerate runs gc.collect() after every training
        # call, and scanning the model's objects made that about 0.5 s a call.
        gc.freeze()
    return _CACHE[spec]


def clear_model_cache() -> None:
    """Forget the cached models (tests use this to measure loads)."""
    _CACHE.clear()


def keep_adapter_float32(model) -> None:
    """Cast trainable (LoRA) parameters to float32.

    TRL casts them to bf16 on quantized models; keeping float32 makes the adapter round trip
    exact and lets aggregated adapters load without rounding.
    """
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


class AdapterSlots:
    """The tensors of one LoRA adapter slot, in PEFT's state-dict key order, read once.

    ``get_peft_model_state_dict`` returns tensors that share storage with the model's LoRA
    parameters, so writing into them updates the model in place. Reading them once per model
    (and slot) keeps each swap to one host-device copy of one flat buffer and one device-side
    copy per tensor, instead of PEFT's key remapping and a state-dict load per swap.
    """

    def __init__(self, model, adapter_name: str = ADAPTER):
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model, adapter_name=adapter_name)
        self.keys = list(state)
        self.tensors = list(state.values())
        self.sizes = [t.numel() for t in self.tensors]
        self.offsets = np.cumsum([0, *self.sizes]).tolist()
        by_pointer = {p.data_ptr(): p for p in model.parameters()}
        self._pointers = [t.data_ptr() for t in self.tensors]
        self._params = [by_pointer.get(ptr) for ptr in self._pointers]

    def valid_for(self) -> bool:
        """Whether the model's LoRA parameters still live where these tensors point.

        Moving or replacing a parameter (``model.to``, a new LoRA layer) changes its storage.
        """
        return all(
            p is not None and p.data_ptr() == ptr
            for p, ptr in zip(self._params, self._pointers, strict=True)
        )

    def read(self) -> OrderedDict[str, np.ndarray]:
        """Return the adapter as float32 arrays: one device-to-host copy of a flat buffer."""
        import torch

        with torch.no_grad():
            flat = torch.cat([t.detach().reshape(-1).float() for t in self.tensors]).cpu().numpy()
        return OrderedDict(
            (key, flat[self.offsets[i] : self.offsets[i + 1]].reshape(tuple(t.shape)))
            for i, (key, t) in enumerate(zip(self.keys, self.tensors, strict=True))
        )

    def write(self, arrays) -> None:
        """Copy named arrays into the adapter: one host-to-device copy of a flat buffer."""
        import torch

        missing = [key for key in self.keys if key not in arrays]
        unexpected = [key for key in arrays if key not in self.keys]
        if missing or unexpected:
            raise ValueError(
                "adapter arrays do not match the model: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        for key, t in zip(self.keys, self.tensors, strict=True):
            if tuple(np.shape(arrays[key])) != tuple(t.shape):
                raise ValueError(
                    f"adapter array {key} has shape {tuple(np.shape(arrays[key]))}, "
                    f"the model's is {tuple(t.shape)}"
                )
        host = np.concatenate(
            [np.asarray(arrays[key], dtype=np.float32).reshape(-1) for key in self.keys]
        )
        device = self.tensors[0].device
        flat = torch.from_numpy(host).to(device, non_blocking=device.type == "cuda")
        with torch.no_grad():
            for i, t in enumerate(self.tensors):
                t.copy_(flat[self.offsets[i] : self.offsets[i + 1]].view(t.shape))


def adapter_slots(model, adapter_name: str = ADAPTER) -> AdapterSlots:
    """Return the model's cached AdapterSlots of one slot, rebuilt if the model changed."""
    cache = model.__dict__.setdefault("_fedrouter_slots", {})
    slots = cache.get(adapter_name)
    if slots is None or not slots.valid_for():
        slots = cache[adapter_name] = AdapterSlots(model, adapter_name)
    return slots


def adapter_to_arrays(model, adapter_name: str = ADAPTER) -> OrderedDict[str, np.ndarray]:
    """Return the adapter's weights as float32 numpy arrays, in the model's stable key order.

    The arrays are views of one fresh buffer per call: nothing the model does later changes
    them.
    """
    return adapter_slots(model, adapter_name).read()


def arrays_to_adapter(model, arrays, adapter_name: str = ADAPTER) -> None:
    """Load named arrays into the adapter in place (no model reload)."""
    adapter_slots(model, adapter_name).write(arrays)


def get_adapter_keys(model, adapter_name: str = ADAPTER) -> list[str]:
    """Return the adapter's state-dict keys in order."""
    return list(adapter_slots(model, adapter_name).keys)


def model_device(model):
    """Return the device the model's inputs belong on."""
    return next(model.parameters()).device
