"""Hot reload: triggers, rollback of bad changes, what is kept, and exactly-once delivery while
plugins and the TOML change under a steady stream."""

import shutil
import signal
import threading
import time

from conftest import ARCHIVE, PLUGINS, RECEIVER, http, pipeline
from otlp_payloads import spans_in, traces
from test_bad_input import PROTOBUF, post

BASE = RECEIVER + ARCHIVE


def write_config(host, text):
    """Rewrites the host's config the way an editor does: write a new file, rename it over."""
    header = host.config.read_text().split("[receivers.otlp]")[0]
    body = "\n".join(line.strip() for line in text.format(grpc=f"127.0.0.1:{host.grpc_port}",
                                                          http=f"127.0.0.1:{host.http_port}",
                                                          data=host.data, plugins=PLUGINS).splitlines())
    staged = host.config.with_suffix(".new")
    staged.write_text(header + body)
    staged.replace(host.config)


def reload(host):
    return http("POST", f"http://127.0.0.1:{host.admin_port}/reload")


def names(host):
    return sorted(span["name"] for _, span in spans_in(host.lines("traces")))


def test_post_reload_applies_and_refuses_with_every_error(make_sluice):
    host = make_sluice(BASE + pipeline())
    status, _, body = reload(host)
    assert status == 200 and b"kept: exporter archive, pipeline all, receiver otlp" in body, body
    write_config(host, BASE + """
        [exporters.extra]
        type = "discard"
    """ + pipeline('["archive", "extra"]'))
    status, _, body = reload(host)
    assert status == 200, body
    assert b"rebuilt: exporter extra, pipeline all" in body and b"receiver otlp" in body
    # A broken file: refused with every error; the old pipeline keeps serving.
    write_config(host, BASE + pipeline('["archive", "missing"]') + "\n[bogus]\n")
    status, _, body = reload(host)
    assert status == 400
    assert b"unknown exporter `missing`" in body and b"unknown section `bogus`" in body
    assert post(host, "/v1/traces", traces(2, prefix="still").SerializeToString(), PROTOBUF)[0] == 200
    assert b"last reload failed" in http("GET", f"http://127.0.0.1:{host.admin_port}/reload")[2]
    assert host.metric("sluice_reload_total", result="failure") >= 1
    assert host.metric("sluice_reload_total", result="success") >= 2
    assert host.wait_metric("sluice_exporter_sent_items_total", 2, exporter="extra") == 2
    assert host.stop() == 0
    assert names(host) == ["still-0", "still-1"]
    assert "Reload failed; the previous configuration keeps serving" in host.logs()


def test_admin_address_changes_are_refused(make_sluice):
    host = make_sluice(BASE + pipeline())
    text = host.config.read_text().replace(f"127.0.0.1:{host.admin_port}", "127.0.0.1:1")
    host.config.write_text(text)
    status, _, body = reload(host)
    assert status == 400 and b"admin_address` changed" in body
    assert host.stop() == 0


def test_editing_the_file_and_sighup_trigger_reloads(make_sluice):
    host = make_sluice(BASE + pipeline())
    write_config(host, BASE + """
        [exporters.extra]
        type = "discard"
    """ + pipeline('["archive", "extra"]'))
    assert host.wait_metric("sluice_reload_total", 1, result="success") == 1, host.logs()
    host.process.send_signal(signal.SIGHUP)
    assert host.wait_metric("sluice_reload_total", 2, result="success") == 2
    assert host.stop() == 0


def swap_file(source, target):
    """Replaces `target` atomically, as a build or a deploy does."""
    staged = target.with_suffix(".staged")
    shutil.copy(source, staged)
    staged.replace(target)


def test_swapping_a_plugin_file_changes_the_rule(make_sluice, tmp_path):
    rule = tmp_path / "rule.wasm"
    shutil.copy(PLUGINS / "fixture-trap.wasm", rule)
    host = make_sluice(BASE + pipeline(processors=f"""
        [[pipelines.all.processors]]
        name = "rule"
        plugin = "{rule}"
    """))
    post(host, "/v1/traces", traces(1, prefix="trap").SerializeToString(), PROTOBUF)
    trap = traces(1)
    trap.resource_spans[0].scope_spans[0].spans[0].name = "trap"
    post(host, "/v1/traces", trap.SerializeToString(), PROTOBUF)
    assert host.wait_metric("sluice_plugin_faults_total", 1, plugin="rule", kind="trap") == 1
    swap_file(PLUGINS / "drop-spans.wasm", rule)
    assert host.wait_metric("sluice_reload_total", 1, result="success") == 1
    post(host, "/v1/traces", trap.SerializeToString(), PROTOBUF)
    time.sleep(0.3)
    assert host.metric("sluice_plugin_faults_total", plugin="rule", kind="trap") == 1, "the new rule serves"
    assert host.stop() == 0
    assert names(host) == ["trap", "trap", "trap-0"]


def test_reloads_under_load_lose_and_duplicate_nothing(make_sluice, tmp_path):
    """A steady stream for 20 s while the test swaps the plugin 10 times, edits the TOML 10
    times, and writes an invalid TOML and a broken .wasm once each: every acknowledged span
    arrives exactly once, and the bad changes are rolled back."""
    rule = tmp_path / "rule.wasm"
    shutil.copy(PLUGINS / "drop-spans.wasm", rule)
    processors = f"""
        [[pipelines.all.processors]]
        name = "rule"
        plugin = "{rule}"
        config = {{{{ span_names = ["never-*"] }}}}
    """
    extra = """
        [exporters.extra]
        type = "discard"
    """
    host = make_sluice(BASE + pipeline(processors=processors))
    acknowledged, stop = [], threading.Event()

    def sender():
        n = 0
        while not stop.is_set():
            request = traces(5, prefix=f"s{n}").SerializeToString()
            while True:  # a refused request is retried as a whole, as OTLP clients do
                status, _, _ = post(host, "/v1/traces", request, PROTOBUF)
                if status == 200:
                    break
                assert status == 503, status
                time.sleep(0.01)
            acknowledged.extend(f"s{n}-{k}" for k in range(5))
            n += 1

    thread = threading.Thread(target=sender)
    thread.start()
    started = time.time()
    plugins = [PLUGINS / "fixture-panic.wasm", PLUGINS / "drop-spans.wasm"]
    changes = []
    for i in range(10):
        swap_file(plugins[i % 2], rule)
        changes.append("plugin")
        time.sleep(0.8)
        with_extra = i % 2 == 0
        write_config(host, BASE + (extra if with_extra else "") +
                     pipeline('["archive", "extra"]' if with_extra else '["archive"]', processors))
        changes.append("toml")
        time.sleep(0.8)
    write_config(host, BASE + pipeline('["archive", "nowhere"]', processors))
    time.sleep(0.8)
    write_config(host, BASE + pipeline(processors=processors))
    time.sleep(0.8)
    rule.with_suffix(".staged").write_text("not wasm")
    rule.with_suffix(".staged").replace(rule)
    time.sleep(0.8)
    swap_file(PLUGINS / "drop-spans.wasm", rule)
    while time.time() - started < 20:
        time.sleep(0.2)
    stop.set()
    thread.join(timeout=30)
    assert host.stop() == 0, host.logs()

    written = names(host)
    assert len(written) == len(set(written)), "no span written twice"
    assert sorted(acknowledged) == written, "every acknowledged span written, nothing else"
    assert len(acknowledged) > 1000
    logs = host.logs()
    assert logs.count("Reloaded:") >= 18, logs.count("Reloaded:")
    assert "unknown exporter `nowhere`" in logs, "the invalid TOML was refused"
    assert "processor `rule`: " in logs and "is not a WebAssembly file" in logs, \
        "the broken .wasm was refused; the old chain kept serving"


def test_configmap_style_symlink_swaps_trigger_a_reload_each_time(tmp_path):
    """Kubernetes mounts a ConfigMap as `NAME -> ..data/NAME`, `..data -> ..<timestamp>`, and
    updates it by pointing `..data` at a new folder; every update reloads."""
    import os
    import subprocess
    from conftest import PLUGIN_CACHE, free_port, sluice_binary
    from test_operator_paths import wait_until
    mount = tmp_path / "configmap"
    mount.mkdir()
    ports = {"grpc": free_port(), "http": free_port(), "admin": free_port()}

    def config_text(extra_exporter):
        exporters = '["archive", "extra"]' if extra_exporter else '["archive"]'
        text = f'[service]\nadmin_address = "127.0.0.1:{ports["admin"]}"\n' + BASE + (
            '\n[exporters.extra]\ntype = "discard"\n' if extra_exporter else "") + pipeline(exporters)
        text = text.format(grpc=f"127.0.0.1:{ports['grpc']}", http=f"127.0.0.1:{ports['http']}",
                           data=tmp_path / "data", plugins=PLUGINS)
        return "\n".join(line.strip() for line in text.splitlines())

    def publish(version, extra_exporter):
        """What the kubelet does: a new timestamped folder, a new link renamed over `..data`."""
        folder = mount / f"..2026_11_25_{version}"
        folder.mkdir()
        (folder / "sluice.toml").write_text(config_text(extra_exporter))
        os.symlink(folder.name, mount / "..data_tmp")
        os.replace(mount / "..data_tmp", mount / "..data")

    publish(0, False)
    os.symlink("..data/sluice.toml", mount / "sluice.toml")
    log_path = tmp_path / "stderr.log"
    admin = f"http://127.0.0.1:{ports['admin']}"

    def ready():
        if process.poll() is not None:
            raise AssertionError(f"sluice exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            return http("GET", f"{admin}/readyz")[0] == 200
        except OSError:
            return False

    def successes():
        _, _, body = http("GET", f"{admin}/metrics")
        for line in body.decode().splitlines():
            if line.startswith('sluice_reload_total{result="success"} '):
                return int(float(line.split()[1]))
        return 0

    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(sluice_binary()), "run", "--config", str(mount / "sluice.toml")],
                                   stderr=log, env={**os.environ, "SLUICE_CACHE_DIR": str(PLUGIN_CACHE)})
        try:
            wait_until(ready, "the host is ready", log_path.read_text)
            for version, extra in [(1, True), (2, False), (3, True)]:
                publish(version, extra)
                wait_until(lambda: successes() == version, f"ConfigMap update {version} reloaded",
                           lambda: http("GET", f"{admin}/reload")[2].decode() + log_path.read_text())
            body = http("GET", f"{admin}/reload")[2]
        finally:
            process.terminate()
            code = process.wait(timeout=30)
    assert b"rebuilt: exporter extra" in body, body
    assert code == 0, log_path.read_text()


def test_an_unchanged_plugin_keeps_its_instance(make_sluice):
    def chain(tag):
        return pipeline(processors=f"""
            [[pipelines.all.processors]]
            plugin = "{{plugins}}/drop-spans.wasm"
            config = {{{{ span_names = ["GET /healthz"] }}}}
            [[pipelines.all.processors]]
            plugin = "{{plugins}}/set-attributes.wasm"
            config = {{{{ resource = [{{{{ key = "tag", value = "{tag}" }}}}] }}}}
        """)
    host = make_sluice(BASE + chain("one"))
    write_config(host, BASE + chain("two"))
    status, _, body = reload(host)
    assert status == 200, body
    assert b"rebuilt: pipeline all" in body
    assert host.stop() == 0
    logs = host.logs()
    assert logs.count("Plugin loaded plugin=drop-spans") == 1, "same file, same config: same instance"
    assert logs.count("Plugin loaded plugin=set-attributes") == 2
