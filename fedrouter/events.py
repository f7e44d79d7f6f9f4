"""The events of metrics.jsonl: one record per kind the round loop writes, and the log as read.

Each record has the fields its kind always carries as attributes, in the order they are
written, and ``fields``: the open-ended ones (a process's phase timers, peaks and seconds, the
message traffic), in the order they came. ``to_json`` gives the line's object as
metrics.jsonl holds it; ``from_json`` reads one back. Reading is tolerant, as reports read
old and damaged files: a field that is missing or of the wrong type reads as None, and a
field that is None is not written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

E = TypeVar("E", bound="Event")


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    """Return an int or float as it is (so that 2 stays 2), anything else as None."""
    return None if isinstance(value, bool) or not isinstance(value, int | float) else value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_READERS: dict[str, Callable[[Any], Any]] = {
    "int | None": _integer,
    "float | None": _number,
    "str | None": _text,
}
_OWN = ("fields", "time")  # every record's: the open-ended fields and the timestamp


class Event:
    """What every record shares: its kind, and the JSON object it is written as."""

    KIND: ClassVar[str]

    def to_json(self) -> dict:
        """Return the event as metrics.jsonl holds it: kind first, then fields in order."""
        out: dict[str, Any] = {"event": self.KIND}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "fields":
                out.update(value)
            elif value is not None:
                out[f.name] = value
        return out

    @classmethod
    def typed(cls) -> tuple[str, ...]:
        """Return the names of the kind's own attributes (not ``fields`` or ``time``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _OWN)

    @classmethod
    def from_fields(cls: type[E], values: Mapping[str, Any], **typed: Any) -> E:
        """Build a record to write: its attributes from ``values`` or ``typed``, the rest in
        ``fields`` (in order). Nothing is checked: the round loop knows what it writes."""
        names = cls.typed()
        own = {k: values[k] for k in names if k in values and k not in typed}
        rest = {k: v for k, v in values.items() if k not in names and k not in typed}
        return cls(**own, **typed, fields=rest)

    @classmethod
    def from_json(cls: type[E], data: Mapping[str, Any]) -> E:
        """Read one metrics.jsonl object; an attribute of the wrong type reads as None."""
        names = cls.typed()
        own = {
            f.name: _READERS[str(f.type)](data.get(f.name))
            for f in dataclasses.fields(cls)
            if f.name in names
        }
        rest = {k: v for k, v in data.items() if k not in names and k not in ("event", "time")}
        return cls(**own, fields=rest, time=_number(data.get("time")))


@dataclass(kw_only=True)
class Start(Event):
    """The round loop began."""

    KIND: ClassVar[str] = "start"
    fields: dict[str, Any] = field(default_factory=dict)
    time: float | None = None


@dataclass(kw_only=True)
class Clustering(Event):
    """A client clustered its data: its local purity, and its process's fields."""

    KIND: ClassVar[str] = "clustering"
    partition_id: int | None = None
    local_purity: float | None = None  # -1: the client did not report it
    pid: int | None = None  # -1: unknown
    model_loads: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    time: float | None = None


@dataclass(kw_only=True)
class Setup(Event):
    """The clustering phase ended: its seconds, its traffic and the server's timers."""

    KIND: ClassVar[str] = "setup"
    seconds: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    time: float | None = None


@dataclass(kw_only=True)
class Resume(Event):
    """The run resumed from a checkpoint; rounds continue from ``from_round``."""

    KIND: ClassVar[str] = "resume"
    from_round: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    time: float | None = None


@dataclass(kw_only=True)
class Train(Event):
    """One trained local cluster of one client in one round."""

    KIND: ClassVar[str] = "train"
    round: int | None = None
    partition_id: int | None = None
    local_cluster: float | None = None
    global_cluster: float | None = None
    num_examples: float | None = None
    train_loss: float | None = None
    cluster_size: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    model_loads: int | None = None
    time: float | None = None


@dataclass(kw_only=True)
class Round(Event):
    """A round's stage (train or evaluate) on the server: its seconds, traffic and timers."""

    KIND: ClassVar[str] = "round"
    round: int | None = None
    stage: str | None = None  # "train" or "evaluate"
    seconds: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    time: float | None = None

    def bytes(self, direction: str) -> Any:
        """Return the bytes sent ``to_clients`` or ``from_clients`` (None if not recorded)."""
        return self.fields.get(f"bytes_{direction}")

    def messages(self, direction: str) -> Any:
        """Return the messages sent ``to_clients`` or ``from_clients`` (None if not recorded)."""
        return self.fields.get(f"messages_{direction}")


@dataclass(kw_only=True)
class Eval(Event):
    """One client's evaluation in one round: ROUGE and routing accuracy, per cluster too."""

    KIND: ClassVar[str] = "eval"
    round: int | None = None
    partition_id: int | None = None
    num_examples: float | None = None
    rouge1: float | None = None
    rouge2: float | None = None
    rougeL: float | None = None
    routing_accuracy: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    model_loads: int | None = None
    time: float | None = None


@dataclass(kw_only=True)
class Failure(Event):
    """A client's reply was an error: in which phase (and round), and the error."""

    KIND: ClassVar[str] = "failure"
    phase: str | None = None  # "clustering", "train" or "evaluate"
    round: int | None = None  # None in the clustering phase
    node: int | None = None
    error: str | None = None  # the exception's last line
    detail: str | None = None  # the full text
    fields: dict[str, Any] = field(default_factory=dict)
    time: float | None = None


@dataclass(kw_only=True)
class Finish(Event):
    """The run ended: its seconds, and the server's timers."""

    KIND: ClassVar[str] = "finish"
    seconds: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    time: float | None = None


KINDS: dict[str, type[Event]] = {
    cls.KIND: cls for cls in (Start, Clustering, Setup, Resume, Train, Round, Eval, Failure, Finish)
}


def parse(data: Mapping[str, Any]) -> Event | None:
    """Return the record of one metrics.jsonl object, or None for a kind not known here."""
    cls = KINDS.get(data.get("event"))
    return cls.from_json(data) if cls is not None else None


@dataclass
class EventLog:
    """metrics.jsonl as read: its events, and the numbers of the lines that did not parse.

    ``events`` are the objects as read; the accessors give the typed records of one kind.
    """

    events: list[dict]
    unreadable: list[int]

    def of(self, kind: str) -> list[dict]:
        """Return the events of one kind (train, eval, round, failure...), in order."""
        return [e for e in self.events if e.get("event") == kind]

    def records(self) -> list[Event]:
        """Return the records of every event of a known kind, in order."""
        return [r for r in map(parse, self.events) if r is not None]

    def _typed(self, cls: type[E]) -> list[E]:
        return [cls.from_json(e) for e in self.of(cls.KIND)]

    def starts(self) -> list[Start]:
        return self._typed(Start)

    def clusterings(self) -> list[Clustering]:
        return self._typed(Clustering)

    def setups(self) -> list[Setup]:
        return self._typed(Setup)

    def resumes(self) -> list[Resume]:
        return self._typed(Resume)

    def trains(self) -> list[Train]:
        return self._typed(Train)

    def rounds(self, stage: str | None = None) -> list[Round]:
        """Return the round events, of one stage ("train", "evaluate") if given."""
        return [r for r in self._typed(Round) if stage is None or r.stage == stage]

    def evals(self) -> list[Eval]:
        return self._typed(Eval)

    def failures(self) -> list[Failure]:
        return self._typed(Failure)

    def finishes(self) -> list[Finish]:
        return self._typed(Finish)

    def note(self) -> str:
        """Say which lines were skipped, or return an empty string."""
        if not self.unreadable:
            return ""
        more = ", ..." if len(self.unreadable) > 3 else ""
        lines = ", ".join(map(str, self.unreadable[:3])) + more
        return f"metrics.jsonl: {len(self.unreadable)} unreadable line(s) skipped ({lines})"
