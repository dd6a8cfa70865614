"""The admin listener's guard: probes and /metrics always open; POST /reload open on loopback,
off on other interfaces without `service.admin_auth`, and behind its bearer token with one.
The token never reaches a log line."""

from conftest import FILE_PIPELINE, http

TOKEN = "admin-token-do-not-log-7f3a"


def post_reload(host, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http("POST", f"http://127.0.0.1:{host.admin_port}/reload", b"", headers)


def open_endpoints_answer(host):
    for path in ("/healthz", "/readyz", "/metrics", "/reload"):
        status, _, body = host.admin(path)
        assert status == 200, f"GET {path}: {status} {body!r}"


def test_an_admin_listener_on_every_interface_without_a_token_turns_reload_off(make_sluice):
    host = make_sluice(FILE_PIPELINE, admin_host="0.0.0.0")
    status, _, body = post_reload(host)
    assert status == 403, body
    assert b"admin_auth" in body and b"Authorization: Bearer" in body, "the answer says how to turn it on"
    open_endpoints_answer(host)
    assert host.logs().count("POST /reload and GET /tap are off") == 1, "one WARN at start"
    assert host.metric("sluice_reload_total", result="success") == 0
    assert host.stop() == 0


def test_an_admin_token_guards_reload_and_is_never_logged(make_sluice, tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN)
    service = f'admin_auth = {{ bearer = {{ token = {{ file = "{token_file}" }} }} }}\n'
    host = make_sluice(FILE_PIPELINE, admin_host="0.0.0.0", service=service)
    for offered in (None, "wrong"):
        status, headers, body = post_reload(host, offered)
        assert status == 401, body
        assert headers.get("www-authenticate") == "Bearer"
    status, _, body = post_reload(host, TOKEN)
    assert status == 200 and body.startswith(b"reloaded"), body
    assert host.wait_metric("sluice_reload_total", 1, result="success") == 1
    open_endpoints_answer(host)

    # A rotated token works from the next request on; the old one no longer does.
    token_file.write_text(TOKEN + "-rotated")
    assert post_reload(host, TOKEN)[0] == 401
    assert post_reload(host, TOKEN + "-rotated")[0] == 200
    assert "GET /tap are off" not in host.logs()
    assert host.stop() == 0
    assert TOKEN not in host.logs(), "the token never reaches the log"


def test_credentials_in_clear_text_need_an_explicit_yes(make_sluice, tmp_path):
    """An exporter with a token to a plain-text endpoint off this machine is refused before
    anything starts; with `allow_plaintext_credentials = true` it starts, with one WARN."""
    token_file = tmp_path / "vendor-token"
    token_file.write_text(TOKEN)
    exporter = f"""
        [exporters.vendor]
        type = "otlp"
        endpoint = "http://10.255.255.1:4317"
        auth = {{{{ bearer = {{{{ token = {{{{ file = "{token_file}" }}}} }}}} }}}}
    """
    wiring = """
        [pipelines.all]
        receivers = ["otlp"]
        exporters = ["vendor"]
    """
    receiver = """
        [receivers.otlp]
        type = "otlp"
        grpc = {{ address = "{grpc}" }}
        http = {{ address = "{http}" }}
    """
    refused = make_sluice(receiver + exporter + wiring, wait=False)
    assert refused.process.wait(timeout=30) == 1
    assert "would cross the network in clear text to `http://10.255.255.1:4317`" in refused.logs()

    allowed = make_sluice(receiver + exporter + "    allow_plaintext_credentials = true\n" + wiring)
    assert allowed.logs().count("allow_plaintext_credentials = true") == 1, "one WARN at start"
    assert allowed.stop() == 0
    assert TOKEN not in allowed.logs()
