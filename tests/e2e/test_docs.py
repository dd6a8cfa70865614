"""The docs, run as written: README's "Try it" with the example client, its command table against
`--help`, every metric name the docs mention against a live `/metrics`, every log line they quote
against the source, each shipped plugin's config table against the plugin itself, and GPU.md's
and OPERATIONS.md's examples and claims against the files they describe. Each test fails when a
doc and what it documents drift apart."""

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib

import pytest
import yaml

from conftest import PLUGIN_CACHE, PLUGINS, REPO, Broker, Sluice, free_port, http, sluice_binary, wait_until
from otlp_payloads import traces

README = REPO / "README.md"
DOCS = REPO / "docs"
# The docs whose metric names and quoted log lines are checked.
PROSE = [README, *sorted(DOCS.glob("*.md"))]
NOT_METRICS = {"sluice_sdk", "sluice_wire", "sluice_plugin"}  # crate and package names in code samples


# --- reading Markdown -------------------------------------------------------------------------

def section(text, heading):
    """The text under `heading` (a whole heading line, e.g. "## Try it"), up to the next heading
    of the same or a higher level."""
    lines = text.splitlines()
    start = lines.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    out, in_code = [], False
    for line in lines[start + 1:]:
        if line.lstrip().startswith("```"):
            in_code = not in_code
        depth = len(line) - len(line.lstrip("#"))
        if not in_code and line.startswith("#") and 0 < depth <= level and line[depth:depth + 1] == " ":
            break
        out.append(line)
    return "\n".join(out)


def code_blocks(text, lang=None):
    """The fenced code blocks in `text` (only those of `lang` when given)."""
    blocks = re.findall(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", text, flags=re.S | re.M)
    return [body for block_lang, body in blocks if lang is None or block_lang == lang]


def cells(row):
    """The cells of a Markdown table row; `\\|` is a pipe inside a cell."""
    inner = row.strip()[1:-1]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def tables(text):
    """Each table in `text` as (caption: the last non-blank line before it, header, rows)."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| :]+\|$", lines[i + 1]):
            caption = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            header, rows, i = cells(lines[i]), [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            found.append((caption, header, rows))
        else:
            i += 1
    return found


def ticked(text):
    return re.findall(r"`([^`]+)`", text)


def run_sluice(*args, cwd=REPO, env=None, timeout=60):
    return subprocess.run([str(sluice_binary()), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# --- README: Try it ---------------------------------------------------------------------------

def shell_lines(block):
    """The commands of a shell block: continuation lines joined, blank and comment lines left out."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def default_address(pipeline_text, variable):
    return re.search(r"\$\{" + variable + r":-([^}]+)\}", pipeline_text).group(1)


def test_readme_try_it_runs_as_written(tmp_path):
    """`make run`, then terminal 2's lines exactly as the README writes them, against the real
    binary serving pipelines/default.toml from the same folder (ports moved to free ones)."""
    readme = README.read_text()
    try_it = section(readme, "## Try it")
    server_block, client_block = code_blocks(try_it, "sh")[:2]
    assert [re.sub(r"\s+#.*$", "", line) for line in shell_lines(server_block)] == ["make run"]
    # `make run` is `sluice run --config $(CONFIG)` with CONFIG defaulting to the default pipeline.
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^CONFIG \?= pipelines/default\.toml$", makefile, flags=re.M)
    assert re.search(r"^run:.*\n\t\./target/release/sluice run --config \$\(CONFIG\)$", makefile, flags=re.M)

    default_toml = (REPO / "pipelines" / "default.toml").read_text()
    addresses = {name: default_address(default_toml, name)
                 for name in ("SLUICE_GRPC_ADDRESS", "SLUICE_HTTP_ADDRESS", "SLUICE_ADMIN_ADDRESS")}
    for address in addresses.values():
        port = address.rsplit(":", 1)[1]
        assert f":{port}" in server_block, f"Try it doesn't name default.toml's {address}"

    # The folder both terminals work in: the repository's pipelines, examples and virtualenv.
    for name, target in {"pipelines": REPO / "pipelines", "examples": REPO / "examples",
                         ".venv": sys.prefix}.items():
        (tmp_path / name).symlink_to(target)
    ports = {name: free_port() for name in addresses}
    moved = {addresses[name]: f"127.0.0.1:{port}" for name, port in ports.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "OTEL_"))}
    host_env = {**env, "SLUICE_CACHE_DIR": str(PLUGIN_CACHE),
                **{name: f"127.0.0.1:{port}" for name, port in ports.items()}}
    admin = moved[addresses["SLUICE_ADMIN_ADDRESS"]]
    with open(tmp_path / "host.log", "wb") as log:
        host = subprocess.Popen([str(sluice_binary()), "run", "--config", "pipelines/default.toml"],
                                cwd=tmp_path, env=host_env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            def ready():
                assert host.poll() is None, (tmp_path / "host.log").read_text()
                try:
                    return http("GET", f"http://{admin}/readyz")[0] == 200
                except OSError:
                    return False
            wait_until(ready, "the host is ready", lambda: (tmp_path / "host.log").read_text(), timeout=20)

            client_env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{moved[addresses['SLUICE_HTTP_ADDRESS']]}"}
            outputs = []
            for line in shell_lines(client_block):
                if "pip install" in line:
                    # Installing needs the network; check that what it installs exists instead.
                    for requirements in re.findall(r"-r (\S+)", line):
                        assert (REPO / requirements).is_file(), requirements
                    continue
                for old, new in moved.items():
                    line = line.replace(old, new)
                result = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=tmp_path, env=client_env,
                                        capture_output=True, text=True, timeout=60)
                assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
                outputs.append((line, result.stdout))

            client = [out for line, out in outputs if "send_telemetry.py" in line]
            assert client and "sent 3 spans, 1 metric and 1 log record" in client[0]
            # The metric the README greps for counts exactly what the client sent.
            grep = [out for line, out in outputs if "/metrics" in line]
            assert grep, "Try it shows no metric"
            accepted = {}
            for sample in grep[0].splitlines():
                match = re.match(r'sluice_receiver_accepted_items_total\{.*signal="(\w+)".*\} (\d+)', sample)
                if match:
                    accepted[match.group(1)] = accepted.get(match.group(1), 0) + int(match.group(2))
            assert accepted == {"traces": 3, "metrics": 1, "logs": 1}, grep[0]
            # `cat data/traces.jsonl` shows the client's spans as OTLP JSON Lines.
            shown = [out for line, out in outputs if line.startswith("cat data/traces.jsonl")]
            spans = [span for out in shown for request in map(json.loads, out.splitlines())
                     for rs in request["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]
            assert sorted(s["name"] for s in spans) == ["charge-card", "checkout", "reserve-stock"]
            metrics = (tmp_path / "data" / "metrics.jsonl").read_text()
            assert '"orders_placed"' in metrics
            logs = [json.loads(line) for line in (tmp_path / "data" / "logs.jsonl").read_text().splitlines()]
            record = logs[0]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
            assert record["body"]["stringValue"] == "order placed" and record["traceId"]

            # `sluice health` and `GET /reload` as the command table and OPERATIONS.md describe them.
            health = run_sluice("health", "--address", admin)
            assert health.returncode == 0 and "200" in health.stdout, health.stderr
            status, _, body = http("GET", f"http://{admin}/reload")
            live_hash = hashlib.sha256((REPO / "pipelines" / "default.toml").read_bytes()).hexdigest()
            assert status == 200 and f"config sha256: {live_hash}" in body.decode(), body
        finally:
            if host.poll() is None:
                host.send_signal(signal.SIGTERM)
            code = host.wait(timeout=30)
    assert code == 0, (tmp_path / "host.log").read_text()
    assert "config sha256:" in (DOCS / "OPERATIONS.md").read_text()
    unhealthy = run_sluice("health", "--address", admin)
    assert unhealthy.returncode == 1, "health must fail once the host is gone"


def test_example_client_needs_only_what_its_requirements_pin():
    """examples/requirements.txt pins what send_telemetry.py imports, at the versions the tests use."""
    wanted = [line.strip() for line in (REPO / "examples" / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    tested = (REPO / "tests" / "requirements.txt").read_text().splitlines()
    for requirement in wanted:
        assert requirement in tested, f"{requirement} differs from tests/requirements.txt"
    source = (REPO / "examples" / "send_telemetry.py").read_text()
    distributions = {"opentelemetry.sdk": "opentelemetry-sdk",
                     "opentelemetry.exporter.otlp.proto.http": "opentelemetry-exporter-otlp-proto-http"}
    imported = set(re.findall(r"^from (opentelemetry(?:\.\w+)+) import", source, flags=re.M))
    for module in imported:
        owner = next((d for prefix, d in distributions.items() if module.startswith(prefix)), None)
        assert owner and any(r.startswith(owner + "==") for r in wanted), module


# --- README: the command line -----------------------------------------------------------------

def help_options(*command):
    result = run_sluice(*command, "-h")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    flags = set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z-]*)", text, flags=re.M)) - {"--help", "--version"}
    env = set(re.findall(r"\[env: ([A-Z_]+)[=\]]", text))  # a hidden value prints no `=`
    values = set()
    for listed in re.findall(r"\[possible values: ([^\]]+)\]", text):
        values |= {v.strip() for v in listed.split(",")}
    return text, flags, env, values


def test_readme_command_table_matches_every_commands_help():
    """Each row's flags and environment variables are exactly those `--help` lists, each mode
    value is named, and every subcommand `sluice --help` lists has a row."""
    table = section(README.read_text(), "## Command line")
    _, header, rows = tables(table)[0]
    assert header[:2] == ["command", "what it does"]
    documented = set()
    for command_cell, description in rows:
        first = ticked(command_cell)[0].split()
        assert first[0] == "sluice", command_cell
        path = []
        for word in first[1:]:
            if not re.fullmatch(r"[a-z]+", word):
                break
            path.append(word)
        row = command_cell + " " + description
        if path in ([], ["help"]):
            for example in ticked(command_cell):
                result = run_sluice(*example.split()[1:]) if "COMMAND" not in example else run_sluice("help", "run")
                assert result.returncode == 0, (example, result.stderr)
            continue
        documented.add(path[0])
        _, flags, env, values = help_options(*path)
        row_flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", row)) - {"--help", "--version"}
        row_env = set(re.findall(r"\b(SLUICE_[A-Z_]+)\b", row))
        assert row_flags == flags, f"`sluice {' '.join(path)}`: README {sorted(row_flags)}, --help {sorted(flags)}"
        assert row_env == env, f"`sluice {' '.join(path)}`: README {sorted(row_env)}, --help {sorted(env)}"
        for value in values:
            assert f"`{value}`" in row, f"`sluice {' '.join(path)}`: README doesn't name `{value}`"
    text = run_sluice("--help").stdout
    commands = re.findall(r"^  ([a-z]+)  ", text.split("Commands:", 1)[1].split("Options:", 1)[0], flags=re.M)
    assert set(commands) - {"help"} == documented, f"--help lists {commands}, README has {sorted(documented)}"


LOGS_BATCH = {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "docs"}}]},
                               "scopeLogs": [{"logRecords": [{"timeUnixNano": "1700000000000000000",
                                                              "severityNumber": 17, "severityText": "ERROR",
                                                              "body": {"stringValue": "disk full"}}]}]}]}


def sluice_commands():
    """Every `sluice …` command line the docs show, in inline code or in a shell block."""
    found = set()
    for doc in PROSE:
        text = doc.read_text()
        found |= {span.replace("\n", " ") for span in re.findall(r"`(sluice [^`]+)`", text)}
        for block in code_blocks(text):
            for line in shell_lines(block):
                match = re.search(r"(?:^|&& |\./target/(?:release|debug)/)(sluice .*)$", line)
                if match:
                    found.add(match.group(1))
    return sorted(found)


def test_every_sluice_command_in_the_docs_parses(tmp_path):
    """Each concrete command line parses (with `--help` after it, clap still refuses an unknown
    flag or a bad value before it); each `sluice plugin test` of a shipped plugin runs."""
    (tmp_path / "plugins").symlink_to(REPO / "plugins")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "traces.jsonl").write_text(json.dumps(BATCH) + "\n")
    (tmp_path / "data" / "logs.jsonl").write_text(json.dumps(LOGS_BATCH) + "\n")
    env = {**os.environ, "SLUICE_CACHE_DIR": str(PLUGIN_CACHE)}
    # Synopses (`[--flag VALUE]`, `…`) are checked against --help by the command-table test.
    commands = [c for c in sluice_commands() if not re.search(r"\[-|\[[A-Z]|…", c)]
    assert len(commands) >= 8, commands
    for command in commands:
        args = [a if a != "COMMAND" else "run" for a in shlex.split(command, comments=True)[1:]]
        if not args:
            continue
        parsed = run_sluice(*args, *([] if args[0] == "help" else ["--help"]), env=env)
        assert parsed.returncode == 0, f"`{command}` doesn't parse:\n{parsed.stderr}"
        if args[:2] == ["plugin", "test"] and len(args) > 2 and args[2].startswith("plugins/dist/"):
            result = run_sluice(*args, cwd=tmp_path, env=env)
            assert result.returncode == 0, f"`{command}`:\n{result.stderr}"


def test_readme_environment_variables_are_read_somewhere():
    """Every variable the README's environment table names is one the binary, a shipped pipeline
    or the host's code reads."""
    table = section(README.read_text(), "## Command line")
    env_table = next(rows for _, header, rows in tables(table) if header[0] == "environment variable")
    haystack = "".join(p.read_text() for p in (REPO / "pipelines").glob("*.toml"))
    haystack += "".join(p.read_text() for p in (REPO / "host" / "src").rglob("*.rs"))
    for row in env_table:
        for variable in re.findall(r"\b((?:SLUICE|RUST)_[A-Z_]+)\b", row[0]):
            assert variable in haystack, f"nothing reads {variable}"


# --- metrics ----------------------------------------------------------------------------------

GPU_SCRIPT = """
driver_version = "550.54.15"
[[samples]]
[[samples.devices]]
index = 0
uuid = "GPU-00000000-0000-0000-0000-000000000001"
model = "Test GPU"
readings = { gpu_utilization_percent = 50 }
"""


@pytest.fixture(scope="module")
def busy_host(tmp_path_factory):
    """A host with every kind of component, so every metric family has series: OTLP, GPU and
    Kafka receivers (a tansu broker with one record), a processor plugin, network exporters
    (never sent to: one with a disk queue, one load-balancing) and a file exporter."""
    tmp = tmp_path_factory.mktemp("docs-metrics")
    (tmp / "gpus.toml").write_text(GPU_SCRIPT)
    broker = Broker(tmp)
    host = Sluice(tmp, f"""
        [receivers.otlp]
        type = "otlp"
        grpc = {{{{ address = "{{grpc}}" }}}}
        http = {{{{ address = "{{http}}" }}}}

        [receivers.gpu]
        type = "gpu"
        kind = "scripted"
        script = "gpus.toml"
        interval = "100ms"

        [exporters.archive]
        type = "file"
        directory = "{{data}}"

        [exporters.idle]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "http://127.0.0.1:{free_port()}"
        queue = {{{{ type = "disk", directory = "{{data}}/queue" }}}}

        [exporters.spread]
        type = "loadbalancing"
        resolver = {{{{ static = ["http://127.0.0.1:{free_port()}", "http://127.0.0.1:{free_port()}"] }}}}

        [pipelines.all]
        receivers = ["otlp"]
        exporters = ["archive", "idle", "spread"]

        [[pipelines.all.processors]]
        plugin = "{{plugins}}/drop-spans.wasm"
        config = {{{{ span_names = ["nothing-matches-this"] }}}}

        [pipelines.gpu]
        signals = ["metrics"]
        receivers = ["gpu"]
        exporters = ["archive"]

        [receivers.kafka]
        type = "kafka"
        brokers = ["{broker.address}"]
        signals = ["traces"]

        [pipelines.from_kafka]
        signals = ["traces"]
        receivers = ["kafka"]
        exporters = ["archive"]
    """)
    # A refused request, so the refusal counters have a series with a reason.
    http("POST", f"{host.http_base}/v1/traces", b"\x0a\xff", {"content-type": "application/x-protobuf"})
    host.wait_metric_at_least("sluice_gpu_devices", 1)
    # A record to read, so the Kafka receiver's lag has series once its statistics come.
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": broker.address})
    producer.produce("otlp_spans", value=traces(1).SerializeToString())
    assert producer.flush(10) == 0
    wait_until(lambda: "sluice_kafka_consumer_lag{" in host.admin("/metrics")[2].decode(), "the lag has series",
               host.logs, timeout=30)
    yield host
    host.stop()
    broker.stop()


def live_families(text):
    """{name as the docs write it: labels seen} for every family in a /metrics text."""
    types = dict(re.findall(r"^# TYPE (\S+) (\w+)$", text, flags=re.M))
    families = {}
    for name, kind in types.items():
        families[name + "_total" if kind == "counter" else name] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+?)(_bucket|_sum|_count)?(\{(.*)\})? \S+$", line)
        if not match or line.startswith("#"):
            continue
        name = match.group(1) + (match.group(2) or "")
        if name not in families and match.group(1) in families:
            name = match.group(1)
        labels = families.setdefault(name, {})
        for key, value in re.findall(r'(\w+)="([^"]*)"', match.group(4) or ""):
            if key != "le":
                labels.setdefault(key, set()).add(value)
    return families


def metric_names_in(text):
    return {n for n in re.findall(r"(?<![\w-])(sluice_[a-z0-9_]+)", text) if n not in NOT_METRICS}


def test_every_metric_the_docs_mention_is_served(busy_host):
    _, _, body = busy_host.admin("/metrics")
    families = live_families(body.decode())
    for doc in PROSE:
        for name in metric_names_in(doc.read_text()):
            assert name in families, f"{doc.relative_to(REPO)} mentions {name}, which /metrics doesn't serve"


def test_readme_metrics_table_is_complete_with_the_right_labels(busy_host):
    """Every family /metrics serves has a row; each row's labels are the ones served; the label
    values a row lists cover the ones served (and equal them where every value is pre-created)."""
    _, _, body = busy_host.admin("/metrics")
    families = live_families(body.decode())
    table = section(README.read_text(), "### Metrics on the admin listener")
    _, header, rows = tables(table)[0]
    assert header[:2] == ["metric", "labels"]
    documented = {}
    for row in rows:
        names = [n for n in ticked(row[0]) if n.startswith("sluice_")]
        labels = {}
        cell = "" if row[1].strip() == "—" else row[1]  # "—": a family without labels
        cell = re.sub(r"\([^)]*\)", lambda m: m.group(0).replace(",", ";"), cell)
        for part in filter(str.strip, cell.split(",")):
            match = re.match(r"\s*(\w+)\s*(?:\((.*)\))?", part)
            values = set(ticked(match.group(2) or ""))
            labels[match.group(1)] = values
        for name in names:
            documented[name] = labels
    missing = sorted(set(families) - set(documented))
    assert not missing, f"README's metrics table lacks {missing}"
    for name, labels in documented.items():
        assert name in families, f"README documents {name}, which /metrics doesn't serve"
        served = families[name]
        if served:
            assert set(labels) == set(served), f"{name}: README labels {sorted(labels)}, served {sorted(served)}"
        for label, values in labels.items():
            if values and label in served:
                assert served[label] <= values, f"{name}{{{label}}}: serves {served[label] - values}, undocumented"
    for name, label in [("sluice_plugin_faults_total", "kind"), ("sluice_gpu_device_errors_total", "kind"),
                        ("sluice_reload_total", "result")]:
        assert families[name][label] == documented[name][label], f"{name}{{{label}}}"


def test_queue_defaults_are_the_ones_operations_documents(busy_host):
    operations = (DOCS / "OPERATIONS.md").read_text()
    _, _, rows = tables(section(operations, "## Queue sizing and worst-case memory"))[0]
    defaults = {row[0]: row[1].strip("`") for row in rows}
    assert busy_host.metric("sluice_queue_capacity", stage="pipeline", name="all") == \
        float(defaults["`[pipelines.NAME] queue_size`"])
    assert busy_host.metric("sluice_queue_capacity", stage="exporter", name="archive") == \
        float(defaults["`[exporters.NAME] queue_size`"])
    # The OTLP receiver's table and its defaults live beside its code.
    schema = (REPO / "host" / "src" / "receivers" / "otlp" / "config.rs").read_text()
    for setting, size in [("max_message_size", defaults["`grpc.max_message_size` of an `otlp` receiver"]),
                          ("max_body_size", defaults["`http.max_body_size` of an `otlp` receiver"])]:
        mib = int(size.removesuffix("MiB"))
        assert re.search(rf"{setting}: ByteSize::mib\({mib}\)", schema), f"{setting} default isn't {size}"


# --- quoted log lines -------------------------------------------------------------------------

def test_every_quoted_log_line_is_one_the_host_writes():
    """`LEVEL message` in backticks, with … for the variable parts, must be a message the host
    logs at that level."""
    sources = {p: p.read_text().replace('\\"', '"').splitlines() for p in (REPO / "host" / "src").rglob("*.rs")}
    quoted = set()
    for doc in PROSE:
        quoted |= {(level, message, doc.name) for level, message in
                   re.findall(r"`(ERROR|WARN|INFO) ([^`]+)`", doc.read_text().replace("\n", " "))}
    assert len(quoted) >= 10
    for level, message, doc in sorted(quoted):
        # The fixed parts; a `:` or `;` that only introduces a variable part may follow in any form.
        fragments = [f.strip(" :;") for f in message.split("…") if f.strip(" :;")]
        found = False
        for lines in sources.values():
            for i, line in enumerate(lines):
                if fragments[0] not in line:
                    continue
                window = "\n".join(lines[max(0, i - 10):i + 10])
                if all(f in window for f in fragments) and f"tracing::{level.lower()}!" in window:
                    found = True
        assert found, f"{doc} quotes `{level} {message}`, which host/src doesn't log at {level}"


# --- PLUGINS.md: the config reference ---------------------------------------------------------

PROBE = "zz_doc_probe"
BATCH = {"resourceSpans": [{"resource": {"attributes": [
    {"key": "service.name", "value": {"stringValue": "docs"}},
    {"key": "tenant", "value": {"stringValue": "acme"}}]},
    "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                               "name": "GET /healthz", "kind": 2, "startTimeUnixNano": "1700000000000000000",
                               "endTimeUnixNano": "1700000000100000000",
                               "attributes": [{"key": "http.route", "value": {"stringValue": "/healthz"}}]}]}]}]}


def plugin_reference():
    """{plugin: [(path of the table's keys, {key: (default, example)})]} from PLUGINS.md's
    reference: a plugin's first table is its top-level config; a later one holds the fields of
    the entries of the lists its caption names."""
    text = section((DOCS / "PLUGINS.md").read_text(), "## The shipped plugins: config reference")
    reference = {}
    for part in re.split(r"^### ", text, flags=re.M)[1:]:
        name = ticked(part.splitlines()[0])[0]
        found = []
        for n, (caption, header, rows) in enumerate(tables(part)):
            assert header == ["key", "type", "default", "meaning", "example"], (name, header)
            keys = {ticked(row[0])[0]: (row[2], row[4]) for row in rows}
            found.append(([] if n == 0 else ticked(caption), keys))
        reference[name] = found
    return reference


def plugin_test(tmp_path, plugin, config):
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(BATCH))
    env = {**os.environ, "SLUICE_CACHE_DIR": str(PLUGIN_CACHE)}
    return run_sluice("plugin", "test", str(PLUGINS / f"{plugin}.wasm"), "--input", str(batch),
                      "--config-json", json.dumps(config), env=env)


def example_value(example, key):
    """An example cell, `key = value` in TOML, as its value."""
    parsed = tomllib.loads(ticked(example)[0])
    assert list(parsed) == [key], f"the example of `{key}` sets {list(parsed)}"
    return parsed[key]


# Every plugin we ship: the Rust crates and the Python projects under plugins/.
SHIPPED_PLUGINS = sorted([p.parent.name for p in (REPO / "plugins").glob("*/Cargo.toml") if p.parent.name != "fixtures"]
                         + [p.parent.name for p in (REPO / "plugins" / "python").glob("*/pyproject.toml")])


def test_plugins_md_documents_every_shipped_plugin():
    assert set(plugin_reference()) == set(SHIPPED_PLUGINS)


@pytest.mark.parametrize("plugin", SHIPPED_PLUGINS)
def test_plugin_table_is_exactly_what_the_plugin_accepts(tmp_path, plugin):
    """The keys are the plugin's own (an unknown key's error lists every key the plugin knows),
    the examples together are a config the plugin accepts, and a key is required exactly when
    its default says so."""
    reference = plugin_reference()[plugin]

    def config_from(top, nested):
        config = dict(top)
        for path, entry in nested:
            for list_key in path:
                config[list_key] = [dict(entry)]
        return config

    top = {key: example_value(example, key) for key, (_, example) in reference[0][1].items()}
    nested = [(path, {key: example_value(example, key) for key, (_, example) in keys.items()})
              for path, keys in reference[1:]]

    for path, keys in reference:
        probe = {PROBE: 1}
        result = plugin_test(tmp_path, plugin, config_from(probe, []) if not path
                             else {**top, **{list_key: [probe] for list_key in path}})
        assert result.returncode != 0, f"{plugin} accepted an unknown key"
        error = result.stderr.split(f"unknown field `{PROBE}`", 1)
        assert len(error) == 2, result.stderr
        accepted = ticked(error[1].splitlines()[0])
        assert sorted(accepted) == sorted(keys), \
            f"{plugin} {'.'.join(path) or 'config'}: the plugin takes {sorted(accepted)}, PLUGINS.md lists {sorted(keys)}"

    full = plugin_test(tmp_path, plugin, config_from(top, nested))
    assert full.returncode == 0, f"{plugin} refuses PLUGINS.md's examples:\n{full.stderr}"

    for n, (path, keys) in enumerate(reference):
        for key, (default, _) in keys.items():
            default = default.strip("`* ")
            if default.startswith("required") and default != "required":
                continue  # required only with some other setting
            if not path:
                config = config_from({k: v for k, v in top.items() if k != key}, nested)
            else:
                entries = [(p, {k: v for k, v in e.items() if k != key} if i == n - 1 else e)
                           for i, (p, e) in enumerate(nested)]
                config = config_from(top, entries)
            result = plugin_test(tmp_path, plugin, config)
            if default == "required":
                assert result.returncode != 0 and f"missing field `{key}`" in result.stderr, \
                    f"{plugin}: PLUGINS.md says `{key}` is required, the plugin takes a config without it"
            else:
                assert result.returncode == 0, \
                    f"{plugin}: PLUGINS.md gives `{key}` a default, the plugin needs it:\n{result.stderr}"


def test_config_files_the_docs_name_are_shipped():
    """A `config_file` the README or PLUGINS.md names is one the shipped pipelines use."""
    shipped = "".join(p.read_text() for p in (REPO / "pipelines").glob("*.toml"))
    for doc in (README, DOCS / "PLUGINS.md"):
        named = re.findall(r'config_file = "([^"]+)"', doc.read_text())
        assert named, doc.name
        for name in named:
            assert (REPO / "pipelines" / name).is_file() and f'config_file = "{name}"' in shipped, \
                f"{doc.name} names config_file {name}, which no shipped pipeline uses"


def test_plugins_md_config_file_example_validates(tmp_path):
    """The `config_file` example, as PLUGINS.md writes it: valid as is; a typo in the rules file
    is reported in that file."""
    config_section = section((DOCS / "PLUGINS.md").read_text(), "### Config")
    block = next(b for b in code_blocks(config_section, "toml") if "config_file" in b)
    pipeline_part, rules_part = re.split(r"^# pipelines/\S+\.rules\.toml$", block, flags=re.M)
    rules_name = re.search(r'^config_file = "([^"]+)"', pipeline_part, flags=re.M).group(1)
    pipelines = tmp_path / "pipelines"
    (pipelines / rules_name).parent.mkdir(parents=True)
    (pipelines / rules_name).write_text(rules_part)
    table = re.search(r"^\[\[pipelines\.(\w+)\.processors\]\]", pipeline_part, flags=re.M).group(1)
    config = pipelines / "sluice.toml"
    config.write_text(f"""
[receivers.otlp]
type = "otlp"
[exporters.out]
type = "discard"
[pipelines.{table}]
receivers = ["otlp"]
exporters = ["out"]
""" + pipeline_part.replace("../plugins/dist", str(PLUGINS)))
    env = {**os.environ, "SLUICE_CACHE_DIR": str(PLUGIN_CACHE)}
    valid = run_sluice("validate", str(config), env=env)
    assert valid.returncode == 0, valid.stderr
    (pipelines / rules_name).write_text(rules_part.replace("span_names", "span_nams"))
    typo = run_sluice("validate", str(config), env=env)
    assert typo.returncode == 1 and "span_nams" in typo.stderr, typo.stderr


# --- GPU.md -----------------------------------------------------------------------------------

def test_gpu_md_scripted_receiver_runs_as_written(tmp_path):
    """The scripted receiver and the script GPU.md shows, run: DCGM series come out. Without
    `script`, validate refuses the receiver as GPU.md says."""
    scripted = section((DOCS / "GPU.md").read_text(), "## The scripted backend")
    receiver, script = code_blocks(scripted, "toml")[:2]
    script_name = re.search(r'^script = "([^"]+)"', receiver, flags=re.M).group(1)
    (tmp_path / script_name).write_text(script)
    escaped = receiver.replace("{", "{{").replace("}", "}}")
    host = Sluice(tmp_path, escaped + """
[exporters.archive]
type = "file"
directory = "{data}"

[pipelines.gpu]
signals = ["metrics"]
receivers = ["gpu"]
exporters = ["archive"]
""")
    try:
        assert host.wait_metric_at_least("sluice_gpu_devices", 1, timeout=15) >= 1, host.logs()
        assert host.wait_metric_at_least("sluice_exporter_sent_items_total", 1, exporter="archive") >= 1, host.logs()
    finally:
        code = host.stop()
    assert code == 0, host.logs()
    names = {m["name"] for request in host.lines("metrics") for rm in request["resourceMetrics"]
             for sm in rm["scopeMetrics"] for m in sm["metrics"]}
    assert "DCGM_FI_DEV_GPU_UTIL" in names and "GPU_PROCESS_FB_USED" in names, names

    without = tmp_path / "without-script.toml"
    without.write_text(re.sub(r"^script = .*$", "", receiver, flags=re.M) + """
[exporters.out]
type = "discard"
[pipelines.gpu]
signals = ["metrics"]
receivers = ["gpu"]
exporters = ["out"]
""")
    refused = run_sluice("validate", str(without))
    assert refused.returncode == 1 and "needs `script" in refused.stderr, refused.stderr


def test_gpu_md_says_what_the_deployments_set_for_process_names():
    gpu = (DOCS / "GPU.md").read_text()
    daemonset = yaml.safe_load((REPO / "deploy" / "k8s" / "base" / "agent-daemonset.yaml").read_text())
    pod = daemonset["spec"]["template"]["spec"]
    says_unset = "does **not** set `hostPID`" in gpu
    assert says_unset == (not pod.get("hostPID", False)), "GPU.md and the agent DaemonSet disagree on hostPID"
    agent = tomllib.loads((REPO / "pipelines" / "agent.toml").read_text())
    assert agent["receivers"]["gpu"]["processes"] is True, "GPU.md says agent.toml asks for processes = true"
    gpu_compose = yaml.safe_load((REPO / "deploy" / "compose" / "compose.gpu.yaml").read_text())
    assert all(service.get("pid") == "host" for service in gpu_compose["services"].values()), \
        "GPU.md says compose.gpu.yaml sets pid: host"


# --- OPERATIONS.md: the Compose network -------------------------------------------------------

def test_operations_md_names_the_compose_network_as_compose_makes_it():
    operations = (DOCS / "OPERATIONS.md").read_text()
    compose_dir = REPO / "deploy" / "compose"
    compose = yaml.safe_load((compose_dir / "compose.yaml").read_text())
    # No project name in the file or .env.example: the project is the folder's name.
    assert "name" not in compose
    env_example = (compose_dir / ".env.example").read_text()
    assert not re.search(r"^COMPOSE_PROJECT_NAME=", env_example, flags=re.M)
    network = "telemetry"
    assert network in compose["networks"] and not (compose["networks"][network] or {}).get("name")
    assert f"`{compose_dir.name}_{network}`" in operations
    sluices = {name: s for name, s in compose["services"].items() if name.startswith("sluice-")}
    assert sluices and all(f"`{name}`" in operations for name in sluices)
    for name, service in sluices.items():
        assert "sluice" in service["networks"][network]["aliases"], name
        published = {str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])}
        assert {"4317", "4318"} <= published, name
    for endpoint in ("http://sluice:4317", "http://sluice:4318"):
        assert endpoint in operations
    read = (compose_dir / "compose.yaml").read_text() + (REPO / "deploy" / "Dockerfile").read_text()
    for variable in set(re.findall(r"\b(SLUICE_[A-Z_]+)\b", operations)):
        assert variable in read, f"OPERATIONS.md names {variable}, which neither compose.yaml nor the image sets"
    assert f"`{compose_dir.name}_sluice-cache`" not in operations or "sluice-cache" in compose["volumes"]
    # The override file OPERATIONS.md gives Graphistry joins that network and sends to `sluice`
    # on the port of the protocol it names.
    joining = section(operations, "## Graphistry's containers on the Compose network")
    override = yaml.safe_load(code_blocks(joining, "yaml")[0])
    externals = [n["name"] for n in override["networks"].values() if (n or {}).get("external")]
    assert externals == [f"{compose_dir.name}_{network}"], externals
    for name, service in override["services"].items():
        assert set(service["networks"]) & set(override["networks"]), name
        environment = service["environment"]
        host, port = re.fullmatch(r"http://([\w-]+):(\d+)", environment["OTEL_EXPORTER_OTLP_ENDPOINT"]).groups()
        assert host == "sluice" and (port == "4317") == (environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"), name
