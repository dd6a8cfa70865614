"""Drops health-check spans by name, and optionally spans whose attribute has one of some
values: the Python twin of the Rust `drop-spans` plugin (exact values, no wildcards).

config = { span_names = ["GET /healthz", "GET /readyz"] }      # the default
config = { span_names = ["GET /healthz"], attribute = "http.route", values = ["/internal"] }
"""

from sluice_plugin import Batch, Filter, export


class DropHealthChecks(Filter):
    signals = frozenset({"traces"})
    config_keys = frozenset({"span_names", "attribute", "values"})

    def __init__(self, config: dict):
        names = config.get("span_names", ["GET /healthz", "GET /readyz"])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("`span_names` must be a list of span names")
        self.names = set(names)
        self.attribute = config.get("attribute")
        if self.attribute is not None and not isinstance(self.attribute, str):
            raise ValueError("`attribute` must be an attribute name")
        self.values = set(config.get("values", []))

    def drop(self, batch: Batch) -> list[int]:
        names = batch.names()
        if self.attribute is None:
            return [i for i, name in enumerate(names) if name in self.names]
        values = batch.attribute_of_each(self.attribute)
        return [i for i, (name, value) in enumerate(zip(names, values))
                if name in self.names or value in self.values]


WitWorld = export(DropHealthChecks)
