"""Hot reload: triggers, rollback of bad changes, what is kept, and exactly-once delivery while
plugins and the TOML change under a steady stream."""

import shutil
import signal
import threading
import time

from conftest import ARCHIVE, PLUGINS, PROTOBUF, RECEIVER, http, pipeline, post, scrape, wait_until
from otlp_payloads import spans_in, traces

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
    served = http("GET", f"http://127.0.0.1:{host.admin_port}/reload")[2]
    assert b"last reload succeeded" in served and b"rebuilt: exporter extra, pipeline all" in served, served
    host.process.send_signal(signal.SIGHUP)
    assert host.wait_metric("sluice_reload_total", 2, result="success") == 2
    served = http("GET", f"http://127.0.0.1:{host.admin_port}/reload")[2]
    assert b"kept: exporter archive, exporter extra, pipeline all, receiver otlp" in served, served
    assert host.metric("sluice_reload_total", result="failure") == 0
    assert host.stop() == 0


def swap_file(source, target):
    """Replaces `target` atomically, as a build or a deploy does."""
    staged = target.with_suffix(".staged")
    shutil.copy(source, staged)
    staged.replace(target)


def test_swapping_a_plugin_file_changes_the_rule(make_sluice, tmp_path):
    """The same path, first the trap fixture (which ignores its config and traps on `trap`,
    passed on by `on_error`), then `drop-spans` (which drops `trap`, as the config says): the
    span the old rule passed on, the new one drops."""
    rule = tmp_path / "rule.wasm"
    shutil.copy(PLUGINS / "fixture-trap.wasm", rule)
    host = make_sluice(BASE + pipeline(processors=f"""
        [[pipelines.all.processors]]
        name = "rule"
        plugin = "{rule}"
        config = {{{{ span_names = ["trap"] }}}}
    """))
    assert post(host, "/v1/traces", traces(1, prefix="trap").SerializeToString(), PROTOBUF)[0] == 200
    trap = traces(1)
    trap.resource_spans[0].scope_spans[0].spans[0].name = "trap"
    assert post(host, "/v1/traces", trap.SerializeToString(), PROTOBUF)[0] == 200
    assert host.wait_metric("sluice_plugin_faults_total", 1, plugin="rule", kind="trap") == 1
    assert host.metric("sluice_plugin_items_dropped_total", plugin="rule") == 0
    swap_file(PLUGINS / "drop-spans.wasm", rule)
    assert host.wait_metric("sluice_reload_total", 1, result="success") == 1, host.logs()
    assert post(host, "/v1/traces", trap.SerializeToString(), PROTOBUF)[0] == 200
    assert host.wait_metric("sluice_plugin_items_dropped_total", 1, plugin="rule") == 1, "the new rule serves"
    assert host.metric("sluice_plugin_faults_total", plugin="rule") == 1
    assert host.stop() == 0
    assert names(host) == ["trap", "trap-0"]


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
    acknowledged, errors, stop = [], [], threading.Event()

    def sender():
        n = 0
        try:
            while not stop.is_set():
                request = traces(5, prefix=f"s{n}").SerializeToString()
                while True:  # a refused request is retried as a whole, as OTLP clients do
                    status, _, body = post(host, "/v1/traces", request, PROTOBUF)
                    if status == 200:
                        break
                    if status != 503:
                        errors.append(f"request s{n}: HTTP {status} {body[:200]!r}")
                        return
                    time.sleep(0.01)
                acknowledged.extend(f"s{n}-{k}" for k in range(5))
                n += 1
        except Exception as error:  # a reset connection, a timeout: the test fails with it
            errors.append(f"request s{n}: {error!r}")

    reloads = {"success": 0, "failure": 0}

    def change(what, result="success"):
        """Makes one change and waits until it has been applied (or refused) under load, and
        until acknowledged spans have flowed since then."""
        what()
        reloads[result] += 1
        for outcome, count in reloads.items():
            got = host.wait_metric("sluice_reload_total", count, timeout=20, result=outcome)
            assert got == count, f"{outcome} reloads: {got}, expected {count}\n{host.logs()}"
        flowed = len(acknowledged)
        wait_until(lambda: len(acknowledged) > flowed or errors, "spans flow after the reload",
                   lambda: f"errors: {errors}")
        assert not errors, errors

    thread = threading.Thread(target=sender)
    thread.start()
    started = time.time()
    plugins = [PLUGINS / "fixture-panic.wasm", PLUGINS / "drop-spans.wasm"]
    for i in range(10):
        change(lambda: swap_file(plugins[i % 2], rule))
        time.sleep(0.4)
        with_extra = i % 2 == 0
        change(lambda: write_config(host, BASE + (extra if with_extra else "") +
                                    pipeline('["archive", "extra"]' if with_extra else '["archive"]', processors)))
        time.sleep(0.4)
    change(lambda: write_config(host, BASE + pipeline('["archive", "nowhere"]', processors)), "failure")
    change(lambda: write_config(host, BASE + pipeline(processors=processors)))

    def break_the_plugin():
        rule.with_suffix(".staged").write_text("not wasm")
        rule.with_suffix(".staged").replace(rule)
    change(break_the_plugin, "failure")
    change(lambda: swap_file(PLUGINS / "drop-spans.wasm", rule))
    while time.time() - started < 20:
        time.sleep(0.2)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the sender is stuck"
    assert not errors, errors
    assert host.metric("sluice_reload_total", result="success") == 22
    assert host.metric("sluice_reload_total", result="failure") == 2
    assert host.stop() == 0, host.logs()

    written = names(host)
    assert len(written) == len(set(written)), "no span written twice"
    assert sorted(acknowledged) == written, "every acknowledged span written, nothing else"
    assert len(acknowledged) > 1000
    logs = host.logs()
    assert logs.count("Reloaded:") == 22, logs.count("Reloaded:")
    assert "unknown exporter `nowhere`" in logs, "the invalid TOML was refused"
    assert "processor `rule`: " in logs and "is not a WebAssembly file" in logs, \
        "the broken .wasm was refused; the old chain kept serving"


def test_configmap_style_symlink_swaps_trigger_a_reload_each_time(tmp_path):
    """Kubernetes mounts a ConfigMap as `NAME -> ..data/NAME`, `..data -> ..<timestamp>`, and
    updates it by pointing `..data` at a new folder; every update reloads."""
    import os
    import subprocess
    from conftest import PLUGIN_CACHE, free_port, sluice_binary
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
        return int(scrape(ports["admin"], "sluice_reload_total", result="success"))

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
