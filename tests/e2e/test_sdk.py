"""The Python OpenTelemetry SDK sends real traces, metrics and logs over gRPC and HTTP/protobuf;
the file exporter's lines must hold exactly those items with their attributes."""

import logging

import pytest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otlp_payloads import attributes, points_in, records_in, spans_in


def exporters(protocol, host, gzip=False):
    """The SDK's OTLP exporters of all three signals, sending to `host` (gzip-compressed when asked)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from grpc import Compression
        endpoint = f"http://{host.grpc_endpoint}"
        compression = Compression.Gzip if gzip else None
        return (OTLPSpanExporter(endpoint=endpoint, insecure=True, compression=compression),
                OTLPMetricExporter(endpoint=endpoint, insecure=True, compression=compression),
                OTLPLogExporter(endpoint=endpoint, insecure=True, compression=compression))
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    compression = Compression.Gzip if gzip else Compression.NoCompression
    return (OTLPSpanExporter(endpoint=f"{host.http_base}/v1/traces", compression=compression),
            OTLPMetricExporter(endpoint=f"{host.http_base}/v1/metrics", compression=compression),
            OTLPLogExporter(endpoint=f"{host.http_base}/v1/logs", compression=compression))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_traces_metrics_logs_arrive_intact(sluice, protocol):
    service = f"sdk-{protocol}"
    resource = Resource.create({"service.name": service, "deployment.environment": "test"})
    span_exporter, metric_exporter, log_exporter = exporters(protocol, sluice)

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    tracer = tracer_provider.get_tracer("e2e")
    for i in range(25):
        with tracer.start_as_current_span(f"op-{i}") as span:
            span.set_attribute("http.route", f"/items/{i}")
            span.set_attribute("retry", i % 3)
            span.set_attribute("cached", i % 2 == 0)
            span.set_attribute("ratio", i / 4)
    tracer_provider.shutdown()

    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meter_provider.get_meter("e2e")
    counter = meter.create_counter("jobs_done", unit="1")
    counter.add(3, {"queue": "gpu"})
    counter.add(4, {"queue": "gpu"})
    counter.add(1, {"queue": "cpu"})
    histogram = meter.create_histogram("job_seconds", unit="s")
    for value in (0.5, 1.5, 4.0):
        histogram.record(value)
    meter_provider.shutdown()

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    logger = logging.getLogger(f"e2e.{protocol}")
    logger.propagate = False
    handler = LoggingHandler(level=logging.INFO, logger_provider=logger_provider)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for i in range(7):
        logger.warning("disk %d almost full", i, extra={"disk.index": i})
    logger_provider.shutdown()
    logger.removeHandler(handler)

    assert sluice.stop() == 0, sluice.logs()

    spans = spans_in(sluice.lines("traces"))
    assert sorted(s["name"] for _, s in spans) == sorted(f"op-{i}" for i in range(25))
    assert {svc for svc, _ in spans} == {service}
    for _, span in spans:
        i = int(span["name"].split("-")[1])
        attrs = attributes(span)
        assert attrs["http.route"] == f"/items/{i}"
        assert int(attrs["retry"]) == i % 3  # int64 travels as a JSON string
        assert attrs["cached"] == (i % 2 == 0)
        assert attrs["ratio"] == pytest.approx(i / 4)
        assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16

    points = points_in(sluice.lines("metrics"))
    counters = {attributes(p)["queue"]: int(p["asInt"]) for _, name, _, p in points if name == "jobs_done"}
    assert counters == {"gpu": 7, "cpu": 1}
    [histogram_point] = [p for _, name, kind, p in points if name == "job_seconds"]
    assert int(histogram_point["count"]) == 3
    assert histogram_point["sum"] == pytest.approx(6.0)

    records = records_in(sluice.lines("logs"))
    assert sorted(r["body"]["stringValue"] for _, r in records) == sorted(
        f"disk {i} almost full" for i in range(7))
    assert all(r["severityNumber"] == 13 for _, r in records)  # WARN
    assert sorted(int(attributes(r)["disk.index"]) for _, r in records) == list(range(7))


def test_accepted_and_exported_counters(sluice):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    provider = TracerProvider(resource=Resource.create({"service.name": "counted"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sluice.http_base}/v1/traces")))
    for i in range(10):
        provider.get_tracer("e2e").start_span(f"s{i}").end()
    provider.shutdown()
    assert sluice.metric("sluice_receiver_accepted_items_total", transport="http", signal="traces") == 10
    assert sluice.wait_metric("sluice_exporter_sent_items_total", 10, exporter="archive", signal="traces") == 10
    assert sluice.metric("sluice_queue_capacity", stage="pipeline", name="all") == 128
    _, _, body = sluice.admin("/metrics")
    assert b"sluice_build_info" in body
