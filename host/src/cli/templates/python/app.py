"""{{name}}: a Sluice filter plugin. It drops the spans whose name is in its config's
`span_names` (by default, health checks)."""

from sluice_plugin import Batch, Filter, export


class {{type}}(Filter):
    signals = frozenset({"traces"})
    config_keys = frozenset({"span_names"})   # any other key is refused as a typo

    def __init__(self, config: dict):
        names = config.get("span_names", ["GET /healthz", "GET /readyz"])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("`span_names` must be a list of span names")
        self.names = set(names)

    def drop(self, batch: Batch) -> list[int]:
        return [i for i, name in enumerate(batch.names()) if name in self.names]


WitWorld = export({{type}})
