#!/usr/bin/env python3
"""A self-contained OTLP client: sends one trace of three spans, one counter and one log record
to Sluice over OTLP/HTTP (protobuf) with the OpenTelemetry Python SDK, then exits.

    pip install -r examples/requirements.txt   # or use the .venv `make venv` (or `make test`) builds
    python examples/send_telemetry.py

Settings, all optional:
    OTEL_EXPORTER_OTLP_ENDPOINT   where Sluice's OTLP/HTTP receiver is (default http://127.0.0.1:4318)
    OTEL_SERVICE_NAME             the service.name resource attribute (default checkout)

Exits 0 when Sluice accepted everything, 1 (with the SDK's reason on stderr) when it did not.
"""

import logging
import os
import sys

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

ENDPOINT = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318").rstrip("/")
SERVICE = os.environ.get("OTEL_SERVICE_NAME", "checkout")
TIMEOUT_S = 5

failures = []


def checked(exporter_class):
    """The SDK's exporter, remembering any export Sluice did not accept."""

    class Checked(exporter_class):
        def export(self, *args, **kwargs):
            result = super().export(*args, **kwargs)
            if result.name != "SUCCESS":
                failures.append(exporter_class.__name__)
            return result

    return Checked


def main():
    resource = Resource.create({"service.name": SERVICE})

    # Traces: one request with three spans, sent when the provider shuts down.
    tracer_provider = TracerProvider(resource=resource)
    span_exporter = checked(OTLPSpanExporter)(endpoint=f"{ENDPOINT}/v1/traces", timeout=TIMEOUT_S)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    tracer = tracer_provider.get_tracer("examples.send_telemetry")

    # Logs: Python's logging, handed to the SDK; a record inside a span carries its trace ID.
    logger_provider = LoggerProvider(resource=resource)
    log_exporter = checked(OTLPLogExporter)(endpoint=f"{ENDPOINT}/v1/logs", timeout=TIMEOUT_S)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    logger = logging.getLogger("examples.send_telemetry")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

    # Metrics: one counter, exported once when the provider shuts down.
    metric_exporter = checked(OTLPMetricExporter)(endpoint=f"{ENDPOINT}/v1/metrics", timeout=TIMEOUT_S)
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    orders = meter_provider.get_meter("examples.send_telemetry").create_counter(
        "orders_placed", unit="{order}", description="Orders placed")

    with tracer.start_as_current_span("checkout") as span:
        span.set_attribute("http.route", "/api/checkout")
        with tracer.start_as_current_span("reserve-stock") as child:
            child.set_attribute("order.items", 3)
        with tracer.start_as_current_span("charge-card") as child:
            child.set_attribute("payment.method", "card")
        orders.add(1, {"payment.method": "card"})
        logger.info("order placed", extra={"order.id": "A-1001"})

    # Shutting down flushes: each provider sends what it holds and waits for the answer.
    tracer_provider.shutdown()
    meter_provider.shutdown()
    logger_provider.shutdown()

    if failures:
        print(f"Sluice at {ENDPOINT} did not accept everything ({', '.join(failures)}); "
              "see the SDK's messages above", file=sys.stderr)
        return 1
    print(f"sent 3 spans, 1 metric and 1 log record from service {SERVICE!r} to {ENDPOINT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
