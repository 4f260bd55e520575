"""notify: the notification outbox (written with the change it announces) and its dispatcher (webhook, e-mail, log).

:meth:`Notifier.enqueue` writes one outbox row per channel routed for the event kind, on the
caller's connection, so a notification exists exactly when its change committed. :meth:`Notifier.dispatch`
later sends due rows outside any change's transaction: each attempt has a timeout (<= 10 s), a failure
is retried with exponential backoff and the row turns ``failed`` after ``max_attempts``. Nothing the
dispatcher does can undo the change.

Webhooks: JSON POST, ``X-Ambidex-Signature: sha256=<hex HMAC of the body>`` when ``secret_env`` names
a set environment variable (the secret travels only in that header's MAC, never in logs or rows).
URLs must be http(s); the host is resolved and EVERY address must be public unless the host or a
network containing the address is allow-listed; the connection goes to the checked address (no
re-resolution, no redirects followed).
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import os
import smtplib
import socket
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Callable, Literal
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from . import deploytables as T
from .errors import AmbidexError, ConfigError

__all__ = ["ChannelSpec", "NotifySpec", "NotifyError", "Notifier", "check_webhook_url", "sign", "redact_url",
           "backoff_seconds"]

log = logging.getLogger(__name__)


class NotifyError(AmbidexError):
    code = "notify.failed"


class ChannelSpec(BaseModel):
    """One destination: ``webhook`` (url, secret_env), ``email`` (smtp_host, smtp_port, sender, to) or ``log`` (path)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["webhook", "email", "log"]
    url: str | None = None
    secret_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]{0,63}$")
    smtp_host: str | None = None
    smtp_port: int = 25
    sender: str | None = None
    to: list[str] = []
    path: str | None = None


class NotifySpec(BaseModel):
    """The ``notify:`` section: channels by name, routes (event-kind glob -> channel names), allowlist."""

    model_config = ConfigDict(extra="forbid")
    channels: dict[str, ChannelSpec] = {}
    routes: dict[str, list[str]] = {}  # e.g. {"deploy.*": ["ops-hook"], "smoke.failed": ["mail"]}
    allowlist: list[str] = []  # host names, or IP networks (CIDR), a webhook may reach though not public
    timeout_seconds: float = Field(default=10.0, gt=0, le=10)
    max_attempts: int = Field(default=5, ge=1)
    backoff_seconds: float = Field(default=30.0, gt=0)


def backoff_seconds(spec: NotifySpec, attempts: int) -> float:
    """Delay before attempt ``attempts + 1``: base * 2^(attempts - 1), capped at one day."""
    return min(spec.backoff_seconds * 2 ** max(attempts - 1, 0), 86_400.0)


def redact_url(url: str) -> str:
    """A URL fit for logs: no user info, no query, no fragment (tokens hide there).

    >>> redact_url("https://u:pw@hooks.example.com/x?token=s3cret")
    'https://hooks.example.com/x'
    """
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        netloc = f"{host}:{p.port}" if p.port else host
        return urlunsplit((p.scheme, netloc, p.path, "", ""))
    except ValueError:
        return "<invalid url>"


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _allowed(host: str, addrs: list[str], allowlist: list[str]) -> bool:
    if host.lower() in {a.lower() for a in allowlist}:
        return True
    nets = []
    for a in allowlist:
        try:
            nets.append(ipaddress.ip_network(a, strict=False))
        except ValueError:
            continue
    return bool(addrs) and all(any(ipaddress.ip_address(x) in n for n in nets) for x in addrs)


def check_webhook_url(url: str, allowlist: list[str], resolve: Callable[[str, int], list[str]] | None = None) -> list[str]:
    """Refuse a URL that is not http(s) or that resolves to a loopback, link-local, private, reserved or
    multicast address, unless allow-listed; return the checked addresses to connect to."""
    p = urlsplit(url)
    if p.scheme not in ("http", "https") or not p.hostname:
        raise ConfigError(f"Webhook URL {redact_url(url)!r} refused: only http:// and https:// URLs are allowed.",
                          code="notify.url_refused", hint="Use an http(s) URL.")
    port = p.port or (443 if p.scheme == "https" else 80)
    resolve = resolve or (lambda h, pt: sorted({ai[4][0] for ai in socket.getaddrinfo(h, pt, type=socket.SOCK_STREAM)}))
    try:
        addrs = resolve(p.hostname, port)
    except OSError as e:
        raise NotifyError(f"Cannot resolve webhook host {p.hostname}: {e}.", code="notify.resolve_failed",
                          hint="Check the URL and DNS.") from None
    if _allowed(p.hostname, addrs, allowlist):
        return addrs
    bad = [a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_global]
    if bad or not addrs:
        raise ConfigError(f"Webhook URL {redact_url(url)!r} refused: {p.hostname} resolves to non-public address(es) "
                          f"{', '.join(bad) or '(none)'} (loopback, link-local or private).",
                          code="notify.url_refused",
                          hint=f"Add '{p.hostname}' or its network to notify.allowlist if this is intended.")
    return addrs


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, port, ip, timeout):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self):
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, port, ip, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self):
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class Notifier:
    """Routes events to channels through the outbox. ``clock`` and ``resolve`` are injectable."""

    def __init__(self, engine: sa.Engine, spec: NotifySpec | None = None, *,
                 clock: Callable[[], dt.datetime] | None = None, resolve=None, environ=None):
        self.engine = engine
        self.spec = spec or NotifySpec()
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.resolve = resolve
        self.environ = os.environ if environ is None else environ
        for name, ch in self.spec.channels.items():
            if ch.kind == "webhook" and ch.url:
                p = urlsplit(ch.url)
                if p.scheme not in ("http", "https"):
                    raise ConfigError(f"notify.channels.{name}.url: scheme {p.scheme!r} refused; use http(s).",
                                      code="notify.url_refused")

    def channels_for(self, kind: str) -> list[str]:
        out: list[str] = []
        for pattern, names in self.spec.routes.items():
            if fnmatch.fnmatchcase(kind, pattern):
                out += [n for n in names if n not in out]
        return out

    def enqueue(self, conn, kind: str, payload: dict) -> int:
        """Write outbox rows for ``kind`` on ``conn`` (the change's own transaction); return how many."""
        now = self.clock()
        rows = [{"event_kind": kind, "channel": ch, "payload": json.dumps(payload, default=str, sort_keys=True),
                 "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
                for ch in self.channels_for(kind)]
        if rows:
            conn.execute(T.outbox.insert(), rows)
        return len(rows)

    __call__ = enqueue  # so a Notifier plugs into Deployments(notify=...)

    def list(self, *, statuses=("pending", "failed"), limit: int = 100) -> list[dict]:
        """Outbox rows (default: pending and failed), newest first."""
        o = T.outbox
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(o.c.id, o.c.event_kind, o.c.channel, o.c.status, o.c.attempts,
                                          o.c.next_attempt_at, o.c.last_error, o.c.created_at, o.c.sent_at)
                                .where(o.c.status.in_(list(statuses))).order_by(o.c.id.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]

    def dispatch(self, *, limit: int = 100) -> dict:
        """Send due pending rows once each; return counts ``{sent, retry, failed}``. Never raises for a send."""
        o, now = T.outbox, self.clock()
        with self.engine.connect() as conn:
            due = conn.execute(sa.select(o).where(o.c.status == "pending", o.c.next_attempt_at <= now)
                               .order_by(o.c.id).limit(limit)).mappings().all()
        counts = {"sent": 0, "retry": 0, "failed": 0}
        for row in due:
            try:
                self.send(row["channel"], row["event_kind"], json.loads(row["payload"]))
                values, key = {"status": "sent", "sent_at": self.clock(), "last_error": None}, "sent"
            except Exception as e:  # noqa: BLE001 - every failure is recorded and retried, never raised
                attempts = row["attempts"] + 1
                final = attempts >= self.spec.max_attempts
                values = {"status": "failed" if final else "pending", "last_error": _safe_error(e)[:2000],
                          "next_attempt_at": self.clock() + dt.timedelta(seconds=backoff_seconds(self.spec, attempts))}
                key = "failed" if final else "retry"
                log.warning("notification %s to %s failed (attempt %d): %s", row["id"], row["channel"], attempts,
                            values["last_error"])
            values["attempts"] = row["attempts"] + 1
            with self.engine.begin() as conn:
                conn.execute(o.update().where(o.c.id == row["id"], o.c.status == "pending").values(**values))
            counts[key] += 1
        return counts

    def send(self, channel: str, kind: str, payload: dict) -> None:
        ch = self.spec.channels.get(channel)
        if ch is None:
            raise NotifyError(f"No notification channel '{channel}'.", code="notify.unknown_channel")
        body = json.dumps({"event": kind, **payload}, default=str, sort_keys=True).encode("utf-8")
        if ch.kind == "webhook":
            self._post(ch, body)
        elif ch.kind == "email":
            self._mail(ch, kind, payload, body)
        else:
            path = Path(ch.path or "notifications.log")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as f:
                f.write(body + b"\n")

    def _post(self, ch: ChannelSpec, body: bytes) -> None:
        addrs = check_webhook_url(ch.url, self.spec.allowlist, self.resolve)
        p = urlsplit(ch.url)
        headers = {"Content-Type": "application/json", "User-Agent": "ambidex-notify/1"}
        if ch.secret_env and self.environ.get(ch.secret_env):
            headers["X-Ambidex-Signature"] = sign(self.environ[ch.secret_env].encode("utf-8"), body)
        cls = _PinnedHTTPSConnection if p.scheme == "https" else _PinnedHTTPConnection
        conn = cls(p.hostname, p.port or (443 if p.scheme == "https" else 80), addrs[0], self.spec.timeout_seconds)
        try:
            path = p.path or "/"
            conn.request("POST", path + (f"?{p.query}" if p.query else ""), body=body, headers=headers)
            resp = conn.getresponse()
            resp.read(65536)
            if not 200 <= resp.status < 300:
                raise NotifyError(f"Webhook {redact_url(ch.url)} answered HTTP {resp.status}.", code="notify.http_error")
        finally:
            conn.close()

    def _mail(self, ch: ChannelSpec, kind: str, payload: dict, body: bytes) -> None:
        msg = EmailMessage()
        msg["Subject"] = f"[ambidex] {kind} {payload.get('entity', '')}".strip()
        msg["From"] = ch.sender or "ambidex@localhost"
        msg["To"] = ", ".join(ch.to)
        msg.set_content(json.dumps(json.loads(body), indent=2))
        with smtplib.SMTP(ch.smtp_host or "localhost", ch.smtp_port, timeout=self.spec.timeout_seconds) as s:
            s.send_message(msg)


def _safe_error(e: Exception) -> str:
    text = f"{type(e).__name__}: {e}"
    return text.split("?")[0] if "://" in text else text
