"""Notifications: outbox in the change's transaction, retries with backoff, HMAC webhooks, SMTP, SSRF refusal."""
from __future__ import annotations

import hashlib
import hmac
import json
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ambidex.deploy import Deployments, Member
from ambidex.errors import ConfigError
from ambidex.notify import ChannelSpec, Notifier, NotifySpec, check_webhook_url

from .conftest import register


class Hook:
    """A real HTTP server on 127.0.0.1 that answers with the queued statuses (then 200)."""

    def __init__(self, statuses=(), delay=0.0):
        self.requests, self.statuses, self.delay = [], list(statuses), delay
        hook = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append((dict(self.headers), body))
                time.sleep(hook.delay)
                self.send_response(hook.statuses.pop(0) if hook.statuses else 200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=s3cret-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def spec_for(url, **kw):
    return NotifySpec(channels={"ops": ChannelSpec(kind="webhook", url=url, secret_env="AMBIDEX_HOOK_SECRET")},
                      routes={"deploy.*": ["ops"]}, allowlist=["127.0.0.1/32"], **kw)


def deploy_with(engine, store, clock, notifier):
    deps = Deployments(engine, store=store, clock=clock, notify=notifier)
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    return deps


def test_webhook_signed_and_sent_once(engine, store, py_model_dir, clock, hook):
    register(engine, store, py_model_dir, "churn")
    n = Notifier(engine, spec_for(hook.url), clock=clock, environ={"AMBIDEX_HOOK_SECRET": "k3y"})
    deploy_with(engine, store, clock, n)
    assert [r["status"] for r in n.list()] == ["pending"]
    assert n.dispatch() == {"sent": 1, "retry": 0, "failed": 0}
    headers, body = hook.requests[0]
    assert headers["X-Ambidex-Signature"] == "sha256=" + hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert json.loads(body)["event"] == "deploy.created"
    assert b"k3y" not in body
    assert n.list() == [] and n.dispatch() == {"sent": 0, "retry": 0, "failed": 0}


def test_failing_endpoint_retries_with_backoff_and_never_undoes(engine, store, py_model_dir, clock):
    register(engine, store, py_model_dir, "churn")
    hook = Hook(statuses=[500, 503])
    try:
        n = Notifier(engine, spec_for(hook.url, backoff_seconds=10, max_attempts=5), clock=clock)
        deps = deploy_with(engine, store, clock, n)
        assert n.dispatch()["retry"] == 1
        row = n.list()[0]
        assert row["attempts"] == 1 and "500" in row["last_error"] and "s3cret" not in row["last_error"]
        assert n.dispatch()["retry"] == 0  # not due yet
        clock.advance(10)
        assert n.dispatch()["retry"] == 1
        clock.advance(19)
        assert n.dispatch()["retry"] == 0  # second backoff is 20 s
        clock.advance(1)
        assert n.dispatch()["sent"] == 1 and len(hook.requests) == 3
        assert deps.live("d").revision == 1
    finally:
        hook.close()


def test_hanging_endpoint_times_out_and_gives_up(engine, store, py_model_dir, clock):
    register(engine, store, py_model_dir, "churn")
    hook = Hook(delay=1.5)
    try:
        n = Notifier(engine, spec_for(hook.url, timeout_seconds=0.3, max_attempts=1), clock=clock)
        deps = deploy_with(engine, store, clock, n)
        t0 = time.perf_counter()
        assert n.dispatch()["failed"] == 1
        assert time.perf_counter() - t0 < 1.4
        assert n.list()[0]["status"] == "failed"
        assert deps.live("d").revision == 1
    finally:
        hook.close()


@pytest.mark.parametrize("url,addrs", [
    ("http://127.0.0.1:9/x", ["127.0.0.1"]),
    ("http://metadata.internal/x", ["169.254.169.254"]),
    ("http://intranet.example/x", ["10.1.2.3"]),
    ("http://v6.example/x", ["::1"]),
    ("http://mixed.example/x", ["93.184.216.34", "192.168.1.1"]),
    ("file:///etc/passwd", []),
    ("gopher://example.com/", []),
])
def test_internal_or_non_http_urls_refused(url, addrs):
    with pytest.raises(ConfigError) as e:
        check_webhook_url(url, [], resolve=lambda h, p: addrs)
    assert e.value.code == "notify.url_refused"


def test_public_or_allowlisted_urls_pass():
    assert check_webhook_url("https://hooks.example/x", [], resolve=lambda h, p: ["93.184.216.34"]) == ["93.184.216.34"]
    assert check_webhook_url("http://intranet.example/x", ["10.0.0.0/8"], resolve=lambda h, p: ["10.1.2.3"])
    assert check_webhook_url("http://intranet.example/x", ["intranet.example"], resolve=lambda h, p: ["10.1.2.3"])


def test_refused_url_fails_delivery_not_the_change(engine, store, py_model_dir, clock, hook):
    register(engine, store, py_model_dir, "churn")
    spec = spec_for(hook.url).model_copy(update={"allowlist": [], "max_attempts": 1})
    n = Notifier(engine, spec, clock=clock)
    deps = deploy_with(engine, store, clock, n)
    assert n.dispatch()["failed"] == 1 and hook.requests == []
    assert "refused" in n.list()[0]["last_error"]
    assert deps.live("d").revision == 1


class _SMTP(socketserver.StreamRequestHandler):
    def handle(self):
        w = lambda s: self.wfile.write(s.encode() + b"\r\n")  # noqa: E731
        w("220 localhost test")
        data = False
        lines = []
        while True:
            line = self.rfile.readline().decode()
            if not line:
                return
            if data:
                if line.rstrip("\r\n") == ".":
                    data = False
                    self.server.messages.append("".join(lines))
                    w("250 ok")
                else:
                    lines.append(line)
                continue
            cmd = line[:4].upper()
            if cmd == "EHLO" or cmd == "HELO":
                w("250 localhost")
            elif cmd == "DATA":
                data = True
                w("354 go")
            elif cmd == "QUIT":
                w("221 bye")
                return
            else:
                w("250 ok")


def test_email_and_log_channels(engine, store, py_model_dir, clock, tmp_path):
    register(engine, store, py_model_dir, "churn")
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTP)
    server.messages = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = NotifySpec(channels={
            "mail": ChannelSpec(kind="email", smtp_host="127.0.0.1", smtp_port=server.server_address[1],
                                sender="ambidex@example.com", to=["ops@example.com"]),
            "file": ChannelSpec(kind="log", path=str(tmp_path / "notify.log"))},
            routes={"deploy.created": ["mail", "file"]})
        n = Notifier(engine, spec, clock=clock)
        deploy_with(engine, store, clock, n)
        assert n.dispatch()["sent"] == 2
        assert "deploy.created" in server.messages[0] and "ops@example.com" in server.messages[0]
        assert json.loads((tmp_path / "notify.log").read_text())["event"] == "deploy.created"
    finally:
        server.shutdown()
        server.server_close()


def test_outbox_is_in_the_changes_transaction(engine, store, py_model_dir, clock):
    register(engine, store, py_model_dir, "churn")
    n = Notifier(engine, NotifySpec(channels={"f": ChannelSpec(kind="log", path="x.log")}, routes={"*": ["f"]}),
                 clock=clock)
    deps = deploy_with(engine, store, clock, n)
    before = len(n.list())
    with pytest.raises(Exception):
        deps.promote("d", [Member("churn", 1)], expected_revision=7)  # refused: writes nothing
    assert len(n.list()) == before
