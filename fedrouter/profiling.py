"""Where a run's time, bytes and memory go: per-process phase timers, message sizes, peaks.

Every process (the server, each simulation worker) adds the seconds of its phases to
``PHASES``. Clients hand theirs to the server in each reply's metrics (``take_phases``); the
server records its own per round. ``python -m fedrouter.bench`` sums them from metrics.jsonl.
Timing costs two ``perf_counter`` calls per phase; nothing here copies an array.
"""

from __future__ import annotations

import resource
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

PHASES: defaultdict[str, float] = defaultdict(float)


@contextmanager
def phase(name: str):
    """Add the wall time of the ``with`` body to phase ``name`` of this process."""
    start = time.perf_counter()
    try:
        yield
    finally:
        PHASES[name] += time.perf_counter() - start


def take_phases() -> dict[str, float]:
    """Return this process's phase seconds since the last call, and start again from zero."""
    out = dict(PHASES)
    PHASES.clear()
    return out


def peak_rss_mb() -> float:
    """Return this process's peak resident memory in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB else


def peak_gpu_mb() -> float:
    """Return the peak GPU memory torch allocated in this process, in MiB (0 without CUDA)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0.0
    return torch.cuda.max_memory_allocated() / 2**20


def content_bytes(content) -> tuple[int, int]:
    """Return (array bytes, other bytes) of a message's RecordDict, as Flower encodes them.

    Arrays count their serialised payload; config and metric records count their protobuf
    size, which is small, so computing it is cheap.
    """
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.common.serde import config_record_to_proto, metric_record_to_proto

    arrays = other = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            arrays += sum(len(array.data) for array in record.values())
        elif isinstance(record, ConfigRecord):
            other += config_record_to_proto(record).ByteSize()
        elif isinstance(record, MetricRecord):
            other += metric_record_to_proto(record).ByteSize()
    return arrays, other


def messages_bytes(messages) -> dict[str, int]:
    """Sum ``content_bytes`` over messages (replies with an error count nothing)."""
    arrays = other = count = 0
    for message in messages:
        if message.has_error():
            continue
        a, o = content_bytes(message.content)
        arrays, other, count = arrays + a, other + o, count + 1
    return {"messages": count, "array_bytes": arrays, "other_bytes": other}
