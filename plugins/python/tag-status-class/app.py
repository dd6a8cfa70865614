"""Tags each span with its HTTP status class ("2xx", "4xx", "5xx", ...), derived from its status
code attribute, so dashboards and rules can group by class.

config = { source = "http.response.status_code", target = "http.status_class" }   # the defaults
"""

from sluice_plugin import Batch, Transform, export, set_attribute


class TagStatusClass(Transform):
    signals = frozenset({"traces"})
    config_keys = frozenset({"source", "target"})

    def __init__(self, config: dict):
        self.source = config.get("source", "http.response.status_code")
        self.target = config.get("target", "http.status_class")
        for key in ("source", "target"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"`{key}` must be an attribute name (a non-empty string)")

    def edits(self, batch: Batch):
        for item, code in enumerate(batch.attribute_of_each(self.source)):
            if isinstance(code, str) and code.isdigit():
                code = int(code)
            if isinstance(code, int) and 100 <= code <= 599:
                yield set_attribute(item, self.target, f"{code // 100}xx")


WitWorld = export(TagStatusClass)
