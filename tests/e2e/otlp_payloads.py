"""Builders for OTLP requests with the Python protobuf classes, and readers for the JSON lines."""

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


def kv(key, value):
    return KeyValue(key=key, value=AnyValue(string_value=value))


def traces(n=3, service="payload-test", trace_id=b"\x01" * 16, prefix="span", attrs=None):
    spans = [
        Span(trace_id=trace_id, span_id=(i + 1).to_bytes(8, "big"), name=f"{prefix}-{i}",
             start_time_unix_nano=1_700_000_000_000_000_000 + i, end_time_unix_nano=1_700_000_000_000_000_100 + i,
             attributes=[kv("index", str(i))] + [kv(k, v) for k, v in (attrs or {}).items()])
        for i in range(n)
    ]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[kv("service.name", service)]),
        scope_spans=[ScopeSpans(spans=spans)])])


def metrics(values=(1.5, 2.5), service="payload-test"):
    points = [NumberDataPoint(as_double=v, time_unix_nano=1_700_000_000_000_000_000) for v in values]
    return ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(
        resource=Resource(attributes=[kv("service.name", service)]),
        scope_metrics=[ScopeMetrics(metrics=[Metric(name="gpu.temp", unit="Cel", gauge=Gauge(data_points=points))])])])


def logs(bodies=("hello", "world"), service="payload-test"):
    records = [LogRecord(body=AnyValue(string_value=b), severity_number=9) for b in bodies]
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=[kv("service.name", service)]),
        scope_logs=[ScopeLogs(log_records=records)])])


def attributes(obj):
    """{key: value} of a JSON attribute list, with each AnyValue reduced to its Python value."""
    out = {}
    for entry in obj.get("attributes", []):
        value = entry.get("value", {})
        out[entry["key"]] = next(iter(value.values()), None) if value else None
    return out


def spans_in(lines):
    """Every span in the file exporter's trace lines, with its resource's service.name."""
    out = []
    for line in lines:
        for rs in line.get("resourceSpans", []):
            service = attributes(rs.get("resource") or {}).get("service.name")
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    out.append((service, span))
    return out


def points_in(lines):
    out = []
    for line in lines:
        for rm in line.get("resourceMetrics", []):
            service = attributes(rm.get("resource") or {}).get("service.name")
            for sm in rm.get("scopeMetrics", []):
                for metric in sm.get("metrics", []):
                    for kind in ("gauge", "sum", "histogram", "exponentialHistogram", "summary"):
                        for point in metric.get(kind, {}).get("dataPoints", []) if metric.get(kind) else []:
                            out.append((service, metric["name"], kind, point))
    return out


def records_in(lines):
    out = []
    for line in lines:
        for rl in line.get("resourceLogs", []):
            service = attributes(rl.get("resource") or {}).get("service.name")
            for sl in rl.get("scopeLogs", []):
                for record in sl.get("logRecords", []):
                    out.append((service, record))
    return out
