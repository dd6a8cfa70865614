"""`sluice top` as a person uses it: in tmux (send-keys, capture-pane) against a host under a
known load, and plain with --once when its output is not a terminal."""

import re
import shutil
import subprocess
import threading
import time

import pytest

from conftest import HEALTH_CHECKS_DROPPED, PROTOBUF, post, sluice_binary, wait_until
from otlp_payloads import traces

# 90 spans to keep and 10 health checks, ten times a second: 1,000 spans/s in, 100/s dropped.
PER_TICK, HEALTH, TICK = 90, 10, 0.1


@pytest.fixture
def loaded_host(make_sluice):
    host = make_sluice(HEALTH_CHECKS_DROPPED)
    stop = threading.Event()

    def send():
        next_tick = time.monotonic()
        while not stop.is_set():
            for request in (traces(PER_TICK, prefix="keep"), traces(HEALTH, prefix="health")):
                post(host, "/v1/traces", request.SerializeToString(), PROTOBUF)
            next_tick += TICK
            time.sleep(max(0.0, next_tick - time.monotonic()))

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(1.5)
    yield host
    stop.set()
    sender.join(timeout=10)


def rate_in(line):
    """The first rate on a line, in items per second."""
    value, unit = re.search(r"([\d.]+)(k|M)?/s", line).groups()
    return float(value) * {"k": 1e3, "M": 1e6, None: 1}[unit]


def row(screen, start):
    return next((line for line in screen.splitlines() if line.startswith(start)), None)


def test_top_once_prints_the_rates_of_every_component(loaded_host):
    result = subprocess.run([str(sluice_binary()), "top", "--once", "--address", f"127.0.0.1:{loaded_host.admin_port}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    screen = result.stdout
    for section in ("RECEIVERS", "PIPELINES", "PLUGINS", "EXPORTERS"):
        assert section in screen, screen
    assert 600 <= rate_in(row(screen, "otlp")) <= 1400, screen
    plugin = row(screen, "all/drop-spans")
    assert plugin and 600 <= rate_in(plugin) <= 1400, screen
    dropped = re.findall(r"([\d.]+k?)/s", plugin)[2]
    assert 50 <= float(dropped.rstrip("k")) <= 150, f"about 100 health checks dropped a second: {plugin}"
    assert 500 <= rate_in(row(screen, "archive")) <= 1300, screen
    assert "\x1b[" not in screen, "plain text when not on a terminal"


def test_top_in_tmux_switches_views_sorts_and_quits(loaded_host):
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.fail("`tmux` is not installed: .ci/run installs it")
    session = f"sluice-top-{loaded_host.admin_port}"
    command = f"{sluice_binary()} top --address 127.0.0.1:{loaded_host.admin_port}"
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "150", "-y", "45", command], check=True)

    def screen():
        return subprocess.run([tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    try:
        wait_until(lambda: row(screen(), "otlp") and "/s" in row(screen(), "otlp"), "top shows the receiver's rate",
                   screen, timeout=20)
        shown = screen()
        assert 600 <= rate_in(row(shown, "otlp")) <= 1400, shown
        assert "EXPORTERS" in shown and "PLUGINS" in shown
        subprocess.run([tmux, "send-keys", "-t", session, "Tab"], check=True)
        wait_until(lambda: "view: Receivers" in screen(), "Tab shows the receivers alone", screen)
        assert "EXPORTERS" not in screen()
        subprocess.run([tmux, "send-keys", "-t", session, "s"], check=True)
        wait_until(lambda: "sort: Rate" in screen(), "s sorts by rate", screen)
        subprocess.run([tmux, "send-keys", "-t", session, "q"], check=True)
        wait_until(lambda: subprocess.run([tmux, "has-session", "-t", session], capture_output=True).returncode != 0,
                   "q quits", screen)
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)
