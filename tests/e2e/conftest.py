"""Shared fixtures: start the real `sluice` binary with a generated config, talk to it, stop it."""

import json
import shutil
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins" / "dist"
# One compiled-plugin cache for the whole test run, so only the first host compiles each plugin.
PLUGIN_CACHE = Path(os.environ.get("SLUICE_TEST_CACHE", "/tmp/sluice-test-plugin-cache"))
sys.path.insert(0, str(Path(__file__).parent))

from otlp_payloads import GRPC_METHODS  # noqa: E402 (found through the path set just above)


def sluice_binary() -> Path:
    path = Path(os.environ.get("SLUICE_BIN", REPO / "target" / "debug" / "sluice"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: run `cargo build -p sluice-host` or `make test`")
    return path


def require_tool(name) -> str:
    """The path of a tool the tests need: in the virtualenv (PyPI tools, installed by `make
    test`) or on PATH (Debian packages, installed by .ci/run). Fails the test when missing."""
    venv = Path(sys.prefix) / "bin" / name
    path = str(venv) if venv.exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: .ci/run installs the Debian packages, make test the PyPI tools")
    return path


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one handed out before in this run: the kernel
    may offer a just-closed ephemeral port again, and a host given the same port for two
    listeners is (rightly) refused."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def http(method, url, body=None, headers=None, timeout=10):
    """Returns (status, headers with lowercase names, body); never raises on HTTP error statuses."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def post(host, path, body, headers):
    """POSTs `body` to `host`'s OTLP/HTTP receiver; returns (status, headers, body)."""
    return http("POST", f"{host.http_base}{path}", body, headers)


def grpc_call(host, signal, payload, compression=None, metadata=None):
    """One unary OTLP/gRPC Export of the encoded `payload` to `host`; returns the raw answer."""
    with grpc.insecure_channel(host.grpc_endpoint, compression=compression) as channel:
        call = channel.unary_unary(GRPC_METHODS[signal], request_serializer=None, response_deserializer=None)
        return call(payload, timeout=10, metadata=metadata)


def wait_until(check, what, context=None, timeout=15, interval=0.05):
    """Polls `check()` until it returns something truthy, and returns that. On timeout, fails
    naming `what`, the last thing `check` returned and `context` (a string, or a callable
    called then: logs, the state being waited on)."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    shown = context() if callable(context) else (context or "")
    raise AssertionError(f"timed out after {timeout}s waiting until {what}; last saw {last!r}\n{shown}")


def scrape(admin_port, metric_name, **labels):
    """From a host's `/metrics`: the sum of every series of `metric_name` whose labels include
    `labels` (0 when none)."""
    _, _, body = http("GET", f"http://127.0.0.1:{admin_port}/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.startswith(metric_name):
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{")[0] != metric_name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def wait_port(port, timeout=15):
    """Waits until something accepts connections on 127.0.0.1:`port`."""
    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(listening, f"something listens on 127.0.0.1:{port}", timeout=timeout)


def rotel_binary():
    """The rotel-agent binary the `rotel` package ships."""
    import rotel
    path = Path(rotel.__file__).parent / "rotel-agent"
    if not path.exists():
        pytest.fail(f"rotel-agent not found at {path}; install the `rotel` package (tests/requirements.txt)")
    return path


class Sluice:
    """One running `sluice run` process with its ports and data directory."""

    def __init__(self, tmp: Path, pipeline: str, extra_env=None, wait=True, grace="20s", service="",
                 admin_host="127.0.0.1"):
        """`service`: more `[service]` lines (TOML), e.g. `memory_limit = "256MiB"`; `admin_host`:
        the admin listener's IP (the tests reach it on loopback either way)."""
        self.tmp = tmp
        self.data = tmp / "data"
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.admin_port = free_port()
        self.config = tmp / "sluice.toml"
        header = textwrap.dedent(f"""
            [service]
            admin_address = "{admin_host}:{self.admin_port}"
            shutdown_grace = "{grace}"
        """) + textwrap.dedent(service)
        self.config.write_text(header + textwrap.dedent(pipeline).format(
            grpc=f"127.0.0.1:{self.grpc_port}", http=f"127.0.0.1:{self.http_port}", data=self.data,
            plugins=PLUGINS))
        env = {**os.environ, "SLUICE_LOG": "info", "SLUICE_CACHE_DIR": str(PLUGIN_CACHE), **(extra_env or {})}
        self.stdout = open(tmp / "stdout.log", "wb")
        self.stderr = open(tmp / "stderr.log", "wb")
        self.process = subprocess.Popen([str(sluice_binary()), "run", "--config", str(self.config)],
                                        stdout=self.stdout, stderr=self.stderr, env=env)
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                # The caller never gets the host to stop, so a host that never got ready is
                # killed here rather than left running past the test.
                self.process.kill()
                self.process.wait()
                self.stdout.close()
                self.stderr.close()
                raise

    @property
    def grpc_endpoint(self):
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_base(self):
        return f"http://127.0.0.1:{self.http_port}"

    def admin(self, path):
        return http("GET", f"http://127.0.0.1:{self.admin_port}{path}")

    def wait_ready(self, timeout=20):
        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"sluice exited with {self.process.returncode}:\n{self.logs()}")
            try:
                return self.admin("/readyz")[0] == 200
            except OSError:
                return False
        wait_until(ready, "sluice is ready", self.logs, timeout=timeout)

    def wait_metric(self, metric_name, expected, timeout=10, **labels):
        """Waits until a sample reaches `expected` and returns its last value."""
        deadline = time.time() + timeout
        value = self.metric(metric_name, **labels)
        while value != expected and time.time() < deadline:
            time.sleep(0.05)
            value = self.metric(metric_name, **labels)
        return value

    def wait_metric_at_least(self, metric_name, minimum, timeout=10, **labels):
        """Waits until a sample reaches at least `minimum` and returns it."""
        deadline = time.time() + timeout
        value = self.metric(metric_name, **labels)
        while value < minimum and time.time() < deadline:
            time.sleep(0.05)
            value = self.metric(metric_name, **labels)
        return value

    def metric(self, metric_name, **labels):
        """The sum of every series of `metric_name` whose labels include `labels` (0 when none)."""
        return scrape(self.admin_port, metric_name, **labels)

    def stop(self, timeout=30):
        """SIGTERM, wait, and return the exit code (SIGKILL after `timeout`, failing the test)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"sluice did not stop within {timeout}s:\n{self.logs()}")
        self.stdout.close()
        self.stderr.close()
        return self.process.returncode

    def logs(self):
        if not self.stderr.closed:
            self.stderr.flush()
        return (self.tmp / "stderr.log").read_text(errors="replace")

    def lines(self, signal_name):
        """The file exporter's JSON objects for one signal."""
        path = self.data / f"{signal_name}.jsonl"
        if not path.exists():
            return []
        text = path.read_text()
        # Only whole lines: each is written with its newline in one `write`, and a test that
        # reads while the host writes can see the start of a line whose end is not there yet.
        return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]


def shipped_sluice(tmp_path, name, **env):
    """`sluice run --config pipelines/<name>` as shipped, its addresses and data directory set
    through the variables the file reads; `env` adds more (e.g. GRAPHISTRY_INSTANCE)."""
    ports = {name: free_port() for name in ("grpc", "http", "admin")}
    env = dict(os.environ, SLUICE_GRPC_ADDRESS=f"127.0.0.1:{ports['grpc']}",
               SLUICE_HTTP_ADDRESS=f"127.0.0.1:{ports['http']}", SLUICE_ADMIN_ADDRESS=f"127.0.0.1:{ports['admin']}",
               SLUICE_DATA_DIR=str(tmp_path / "data"), SLUICE_CACHE_DIR=str(PLUGIN_CACHE), **env)
    host = Sluice.__new__(Sluice)
    host.tmp, host.data = tmp_path, tmp_path / "data"
    host.grpc_port, host.http_port, host.admin_port = ports["grpc"], ports["http"], ports["admin"]
    host.stdout, host.stderr = open(tmp_path / "stdout.log", "wb"), open(tmp_path / "stderr.log", "wb")
    host.process = subprocess.Popen([str(sluice_binary()), "run", "--config", str(REPO / "pipelines" / name)],
                                    stdout=host.stdout, stderr=host.stderr, env=env)
    host.wait_ready()
    return host


TOPICS = ("otlp_spans", "otlp_metrics", "otlp_logs")


def tansu_binary():
    found = shutil.which("tansu") or str(Path.home() / ".cargo" / "bin" / "tansu")
    if not os.path.exists(found):
        pytest.fail("`tansu` is not installed: .ci/run installs it "
                    "(cargo install tansu --version 0.6.0 --features dynostore,libsql --locked)")
    return found


class Broker:
    """A tansu broker on a free loopback port, the three OTLP topics made with 3 partitions.
    `advertised_port`: the port it tells clients to use instead of its own (a relay's);
    `storage`: tansu's storage engine, a `sqlite://` file relative to `tmp_path`, which keeps
    topics and users across restarts; `authentication`: SASL/SCRAM required of every client;
    `make_topics`: false where the storage already has them."""

    def __init__(self, tmp_path, advertised_port=None, storage="memory://tansu/", authentication=False,
                 make_topics=True):
        self.port = free_port()
        self.advertised_port = advertised_port or self.port
        self.tmp, self.storage, self.authentication = tmp_path, storage, authentication
        self.log = open(tmp_path / "broker.log", "ab")
        self.start(make_topics)

    @property
    def url(self):
        return f"tcp://127.0.0.1:{self.port}"

    def start(self, make_topics=True):
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", self.url,
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
             "--storage-engine", self.storage, *(["--authentication"] if self.authentication else [])],
            stdout=self.log, stderr=self.log, cwd=self.tmp)
        try:
            wait_port(self.port)
        except Exception:
            # A tansu built without a storage engine says so and exits.
            log = (self.tmp / "broker.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"tansu did not start ({self.storage}); its log:\n{log}")
        for topic in TOPICS if make_topics else ():
            subprocess.run([tansu_binary(), "topic", "create", topic, "--broker", self.url, "--partitions", "3"],
                           check=True, capture_output=True, timeout=30)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def address(self):
        """Where clients bootstrap: the advertised port (a relay's, when one stands in front)."""
        return f"127.0.0.1:{self.advertised_port}"


# Pipeline building blocks, formatted by the harness ({grpc}, {http}, {data}, {plugins}).
RECEIVER = """
    [receivers.otlp]
    type = "otlp"
    grpc = {{ address = "{grpc}" }}
    http = {{ address = "{http}" }}
"""

ARCHIVE = """
    [exporters.archive]
    type = "file"
    directory = "{data}"
"""


def pipeline(exporters='["archive"]', processors=""):
    """The `all` pipeline from the OTLP receiver to `exporters`, with processor tables after it."""
    return f"""
    [pipelines.all]
    receivers = ["otlp"]
    exporters = {exporters}
    {processors}
"""


# OTLP in, spans named `health-*` dropped by the shipped `drop-spans`, the rest to the archive.
HEALTH_CHECKS_DROPPED = RECEIVER + ARCHIVE + pipeline(processors="""
    [[pipelines.all.processors]]
    plugin = "{plugins}/drop-spans.wasm"
    config = {{ span_names = ["health-*"] }}
""")

FILE_PIPELINE = """
    [receivers.otlp]
    type = "otlp"
    grpc = {{ address = "{grpc}" }}
    http = {{ address = "{http}", max_body_size = "1MiB" }}

    [exporters.archive]
    type = "file"
    directory = "{data}"

    [pipelines.all]
    receivers = ["otlp"]
    exporters = ["archive"]
"""


@pytest.fixture
def sluice(tmp_path):
    """A host with both OTLP transports feeding the file exporter."""
    host = Sluice(tmp_path, FILE_PIPELINE)
    yield host
    if host.process.poll() is None:
        host.stop()


@pytest.fixture
def make_sluice(tmp_path):
    """Starts hosts with custom pipelines; stops whatever is left at the end."""
    hosts = []

    def make(pipeline, **kwargs):
        sub = tmp_path / f"host{len(hosts)}"
        sub.mkdir(exist_ok=True)
        host = Sluice(sub, pipeline, **kwargs)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        if host.process.poll() is None:
            host.stop()
