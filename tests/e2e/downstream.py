"""A scriptable OTLP/HTTP destination for exporter tests: records every request (headers and
decoded items) and answers as told, over plain HTTP or TLS."""

import gzip
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTracePartialSuccess,
                                                                       ExportTraceServiceRequest,
                                                                       ExportTraceServiceResponse)


class Downstream:
    def __init__(self, port=0, answer=None, tls: ssl.SSLContext | None = None):
        """`answer(n, request)` returns (status, headers, response_bytes) for request number n."""
        self.requests = []
        self.closed = False
        self.lock = threading.Lock()
        self.answer = answer or (lambda n, request: (200, {}, ExportTraceServiceResponse().SerializeToString()))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.closed:
                    # Gone: hang up without an answer, like a crashed destination.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                content_type = self.headers.get("Content-Type", "")
                if content_type.startswith("application/json"):
                    request = json.loads(body)
                    names = [s["name"] for rs in request.get("resourceSpans", []) for ss in rs.get("scopeSpans", [])
                             for s in ss.get("spans", [])]
                else:
                    request = ExportTraceServiceRequest.FromString(body)
                    names = [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
                with outer.lock:
                    n = len(outer.requests)
                    record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                              "names": names, "at": time.monotonic(), "status": None,
                              "json": request if content_type.startswith("application/json") else None}
                    outer.requests.append(record)
                status, headers, response = outer.answer(n, request)
                record["status"] = status
                self.send_response(status)
                self.send_header("Content-Type", content_type or "application/x-protobuf")
                self.send_header("Content-Length", str(len(response)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(response)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        host = "localhost" if self.scheme == "https" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}"

    def delivered(self, ok_only=True):
        """Span names from the requests that were answered 2xx (all requests if not ok_only),
        sorted."""
        with self.lock:
            return sorted(n for r in self.requests if not ok_only or 200 <= (r["status"] or 0) < 300
                          for n in r["names"])

    def gaps(self):
        """Seconds between one request's arrival and the next's."""
        with self.lock:
            times = [r["at"] for r in self.requests]
        return [round(b - a, 3) for a, b in zip(times, times[1:])]

    def close(self):
        self.closed = True
        self.server.shutdown()
        self.server.server_close()


def partial_success(rejected, message="rejected by the test"):
    return ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)).SerializeToString()


def reserve_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
