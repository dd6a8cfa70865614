"""Write Sluice plugins in Python.

A plugin is a class: a filter says which items to drop, a transform which attributes to change,
a router where each item goes, an exporter which HTTP requests deliver a batch. Sluice calls it once per batch, never once per item, with a
`Batch` that the host reads for it: names, attributes and fields come from the host's views of
the encoded OTLP request, so the guest never parses protobuf.

    from sluice_plugin import Batch, Filter, export

    class DropHealthChecks(Filter):
        def __init__(self, config: dict):
            self.names = set(config.get("span_names", ["GET /healthz"]))

        def drop(self, batch: Batch) -> list[int]:
            return [i for i, name in enumerate(batch.names()) if name in self.names]

    WitWorld = export(DropHealthChecks)

Build it into a WebAssembly component with componentize-py (`sluice plugin new NAME --lang
python` writes a project that does), then put the `.wasm` in a pipeline's `processors`.

Pure Python only: the component holds a Python interpreter, not native extensions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

from componentize_py_types import Err
from wit_world.imports import batches, types

__all__ = [
    "Batch", "Filter", "Transform", "Router", "Exporter", "Request", "Span", "LogRecord", "Metric",
    "set_attribute", "set_resource_attribute", "delete_attribute", "rename_attribute", "rename_metric",
    "export",
]

Value = Union[str, bool, int, float, bytes, list, dict, None]
"""An attribute value as Python sees it; arrays and key-value lists as parsed OTLP JSON."""


def _value(value: Optional[types.AttributeValue]) -> Value:
    if value is None or isinstance(value, types.AttributeValue_Empty):
        return None
    if isinstance(value, types.AttributeValue_Json):
        return json.loads(value.value)
    return value.value


@dataclass(frozen=True)
class Span:
    """The fields of a span rules read. IDs are lowercase hex ("" when absent)."""
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: int
    status_message: str


@dataclass(frozen=True)
class LogRecord:
    """The fields of a log record rules read."""
    time_unix_nano: int
    severity_number: int
    severity_text: str
    body: Value
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class Metric:
    """The fields of a metric rules read; `type` is gauge, sum, histogram,
    exponential_histogram, summary or empty."""
    name: str
    description: str
    unit: str
    type: str
    data_points: int


class Batch:
    """One batch, valid during the call it is passed to. Items (spans, metrics, log records)
    and resources are numbered from 0 in batch order. Every method is one call into the host:
    prefer `names()` and `attribute_of_each()` to a loop of `name(i)` or `attribute(i, key)`."""

    def __init__(self, handle: batches.Batch):
        self._handle = handle

    @property
    def signal(self) -> str:
        """"traces", "metrics" or "logs"."""
        return self._handle.signal().name.lower()

    def __len__(self) -> int:
        return self._handle.len()

    def names(self) -> list[str]:
        """Every item's name: span and metric names, log records' event names."""
        return self._handle.names()

    def name(self, item: int) -> str:
        return self._handle.name(item)

    def attribute(self, item: int, key: str) -> Value:
        """Item `item`'s attribute `key` (a metric's: its first data point's), or None."""
        return _value(self._handle.attribute(item, key))

    def attribute_of_each(self, key: str) -> list[Value]:
        """Attribute `key` of every item, in order (None where absent)."""
        return [_value(value) for value in self._handle.attribute_of_each(key)]

    def attributes(self, item: int) -> dict[str, Value]:
        return {a.key: _value(a.value) for a in self._handle.attributes(item)}

    def resource_count(self) -> int:
        return self._handle.resource_count()

    def resource_of(self, item: int) -> int:
        """The index of the resource group item `item` belongs to."""
        return self._handle.resource_of(item)

    def resource_attribute(self, resource: int, key: str) -> Value:
        return _value(self._handle.resource_attribute(resource, key))

    def resource_attributes(self, resource: int) -> dict[str, Value]:
        return {a.key: _value(a.value) for a in self._handle.resource_attributes(resource)}

    def span(self, item: int) -> Optional[Span]:
        s = self._handle.span(item)
        if s is None:
            return None
        return Span(s.name, s.kind, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                    s.start_time_unix_nano, s.end_time_unix_nano, s.status_code, s.status_message)

    def log(self, item: int) -> Optional[LogRecord]:
        r = self._handle.log(item)
        if r is None:
            return None
        return LogRecord(r.time_unix_nano, r.severity_number, r.severity_text, _value(r.body),
                         r.trace_id.hex(), r.span_id.hex())

    def metric(self, item: int) -> Optional[Metric]:
        m = self._handle.metric(item)
        if m is None:
            return None
        return Metric(m.name, m.description, m.unit, m.metric_type.name.lower(), m.data_points)

    def bytes(self) -> bytes:
        """The encoded OTLP request, copied into the guest."""
        return self._handle.bytes()


class Plugin:
    """What every kind shares: built from the `config` table (a dict), called for `signals`.
    With `config_keys` set, a config holding any other key is refused before the constructor
    runs (a typo is an error, not a silently ignored setting)."""

    signals: frozenset[str] = frozenset({"traces", "metrics", "logs"})
    config_keys: Optional[frozenset[str]] = None

    def __init__(self, config: dict):
        self.config = config


class Filter(Plugin):
    """Keeps or drops items."""

    def drop(self, batch: Batch) -> Iterable[int]:
        """The indexes of the items to drop."""
        return []


class Transform(Plugin):
    """Changes attributes, resource attributes and metric names."""

    def edits(self, batch: Batch) -> Iterable[types.Edit]:
        """The edits to make, in the order they apply (see `set_attribute` and friends)."""
        return []


class Router(Plugin):
    """Chooses a named route (a key of the pipeline's `routes`) per item."""

    def route(self, batch: Batch) -> Iterable[Optional[str]]:
        """Each item's route in order, None for the pipeline's default exporters."""
        return []


@dataclass(frozen=True)
class Request:
    """One HTTP request an exporter asks the host to send. The host joins `path` (starting with
    `/`, with an optional query) to the exporter's `endpoint`, adds its configured credentials and
    headers, and sends it with its TLS, queue and retries."""
    path: str = "/"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    method: str = "POST"


class Exporter(Plugin):
    """Turns a batch into HTTP requests for a destination Sluice has no exporter for. Used as an
    exporter (`type = "plugin"`), built with `-w exporter`."""

    def render(self, batch: Batch) -> Iterable[Request]:
        """The requests that deliver the batch, in order (none to skip it)."""
        return []


_METHODS = {m.name: m for m in types.Method}


def _request(request: Request) -> types.HttpRequest:
    method = _METHODS.get(request.method.upper())
    if method is None:
        raise ValueError(f"unknown HTTP method {request.method!r}")
    body = request.body.encode() if isinstance(request.body, str) else bytes(request.body)
    return types.HttpRequest(method, request.path, [(k, v) for k, v in request.headers], body)


def _written(value: Union[str, bool, int, float]) -> types.Value:
    if isinstance(value, bool):
        return types.Value_Boolean(value)
    if isinstance(value, int):
        return types.Value_Int(value)
    if isinstance(value, float):
        return types.Value_Double(value)
    return types.Value_String(str(value))


_MODES = {"insert": types.SetMode.INSERT, "update": types.SetMode.UPDATE, "upsert": types.SetMode.UPSERT}


def set_attribute(item: int, key: str, value: Union[str, bool, int, float], mode: str = "upsert") -> types.Edit:
    """Sets item `item`'s attribute (on a metric: each data point's). `mode`: insert (only if
    absent), update (only if present) or upsert."""
    return types.Edit_SetAttribute(types.SetAttribute(types.Target_Item(item), key, _written(value), _MODES[mode]))


def set_resource_attribute(resource: int, key: str, value: Union[str, bool, int, float],
                           mode: str = "upsert") -> types.Edit:
    """Sets resource group `resource`'s attribute."""
    return types.Edit_SetAttribute(
        types.SetAttribute(types.Target_Resource(resource), key, _written(value), _MODES[mode]))


def delete_attribute(item: int, key: str) -> types.Edit:
    """Removes item `item`'s attribute `key`."""
    return types.Edit_DeleteAttribute(types.DeleteAttribute(types.Target_Item(item), key))


def rename_attribute(item: int, key: str, new_key: str) -> types.Edit:
    """Renames item `item`'s attribute `key` to `new_key`, keeping its value."""
    return types.Edit_RenameAttribute(types.RenameAttribute(types.Target_Item(item), key, new_key))


def rename_metric(item: int, new_name: str) -> types.Edit:
    """Renames metric `item`."""
    return types.Edit_RenameMetric(types.RenameMetric(item, new_name))


_SIGNALS = {"traces": types.Signals.TRACES, "metrics": types.Signals.METRICS, "logs": types.Signals.LOGS}


def _check_keys(config: dict, known: Optional[frozenset[str]]) -> None:
    """Refuses keys outside `known`, in the words the host's Rust plugins use."""
    if known is None:
        return
    for key in config:
        if key not in known:
            expected = ", ".join(f"`{k}`" for k in sorted(known)) or "no keys"
            raise Err(f"invalid plugin config: unknown field `{key}`, expected one of {expected}")


def export(plugin_class: type) -> type:
    """The `WitWorld` class componentize-py builds the component from, running `plugin_class`
    (a `Filter`, `Transform`, `Router` or `Exporter`). Assign it to `WitWorld` in the module you
    build.

    The config comes as a dict; an exception from the constructor refuses the plugin with its
    message, and one from a call fails that batch (the pipeline's `on_error` applies)."""
    state: dict[str, Any] = {}

    def plugin() -> Any:
        if "plugin" not in state:
            raise Err("the plugin was called before `init` succeeded")
        return state["plugin"]

    def guarded(call):
        try:
            return call()
        except Err:
            raise
        except Exception as error:  # a rule's bug fails its batch, not the host
            raise Err(f"{type(error).__name__}: {error}")

    class WitWorld:
        def init(self, config: str) -> types.PluginInfo:
            def build():
                settings = json.loads(config) if config.strip() else {}
                if not isinstance(settings, dict):
                    raise Err("invalid plugin config: expected a table")
                _check_keys(settings, plugin_class.config_keys)
                instance = plugin_class(settings)
                state["plugin"] = instance
                signals = types.Signals(0)
                for name in instance.signals:
                    signals |= _SIGNALS[name]
                return types.PluginInfo(signals)
            return guarded(build)

        def filter(self, batch: batches.Batch) -> list[int]:
            return guarded(lambda: sorted({int(i) for i in plugin().drop(Batch(batch))}))

        def transform(self, batch: batches.Batch) -> list[types.Edit]:
            return guarded(lambda: list(plugin().edits(Batch(batch))))

        def route(self, batch: batches.Batch) -> types.Routing:
            def routing():
                names: list[str] = []
                by_item: list[int] = []
                for route in plugin().route(Batch(batch)):
                    if route is None:
                        by_item.append(0)
                        continue
                    if route not in names:
                        names.append(route)
                    by_item.append(names.index(route) + 1)
                return types.Routing(names, by_item)
            return guarded(routing)

        def render(self, batch: batches.Batch) -> list[types.HttpRequest]:
            return guarded(lambda: [_request(r) for r in plugin().render(Batch(batch))])

    return WitWorld
