"""The status view as a web page: a WSGI app serving ``/status`` and ``/status.json``.

``/status`` is HTML that updates itself; ``/status.json`` the view as data.

``make_app(url)`` runs under any WSGI server; ``backends status URL --serve
127.0.0.1:8080`` runs it with the standard library's server. The page is
one small document with no external asset: one lane per process, its
events recent first, ages that keep counting, failures and lock waits
standing out; it asks ``status.json`` again every two seconds and puts what
it gets in place without a reload. Every text from an event is set as text
(never as HTML), and a Content-Security-Policy allows only the page's own
script (by nonce) and requests to its own origin.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from ..errors import BackendError
from ..redis.streamread import DEFAULT_STREAM, check_count, check_stream
from .status import check_status_url, check_timeout, reading_error, summary

__all__ = ["PAGE", "make_app", "parse_address", "serve", "server"]

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: the page; ``__NONCE__`` is replaced by each response's nonce
PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>backends status</title>
<style nonce="__NONCE__">
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d232a}
header{padding:10px 16px;background:#1d232a;color:#fff;display:flex;gap:18px;align-items:baseline;
flex-wrap:wrap}
header .muted{color:#aab2bd}
#banner{display:none;padding:8px 16px;background:#ffebe9;color:#82071e;font-weight:600}
#unreadable{display:none;padding:6px 16px;background:#fff8c5;color:#4d2d00}
#lanes{display:grid;grid-auto-flow:column;grid-auto-columns:minmax(280px,1fr);gap:12px;padding:12px;
overflow-x:auto;align-items:start}
.lane{background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;min-width:0}
.lane h2{font-size:13px;margin:0;padding:8px 10px;border-bottom:1px solid #e3e6ea;display:flex;gap:8px}
.lane h2 .state{margin-left:auto;font-weight:400}
.live .state{color:#1a7f37}.silent .state{color:#9a6700}.unknown .state{color:#6a737d}
ol{list-style:none;margin:0;padding:0;max-height:75vh;overflow-y:auto}
li{padding:4px 10px;border-bottom:1px solid #f0f1f3;font:12px/1.35 ui-monospace,Menlo,monospace;
overflow-wrap:anywhere}
li .age{color:#6a737d;float:right;margin-left:8px;font-family:system-ui,sans-serif}
li.trouble{background:#ffebe9;color:#82071e;font-weight:600}li.slow{background:#fff8c5}
#empty{padding:24px;color:#6a737d}
</style></head><body>
<header><strong>backends status</strong><span class="muted" id="stream"></span>
<span class="muted" id="updated">connecting...</span></header>
<div id="banner" role="alert"></div><div id="unreadable"></div>
<main id="lanes"></main><div id="empty"></div>
<script nonce="__NONCE__">
"use strict";
let view = null, skew = 0;
const $ = (id) => document.getElementById(id);
function age(seconds) {
  seconds = Math.max(0, seconds);
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]]) {
    if (seconds < size) continue;
    const n = Math.floor(seconds / size);
    return n + " " + unit + (n > 1 ? "s" : "") + " ago";
  }
  return "just now";
}
function now() { return Date.now() / 1000 - skew; }
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
function skipped() {
  const entries = view.unreadable.filter((u) => u.kind === "entry").length;
  const beats = view.unreadable.length - entries;
  const parts = [];
  if (entries) parts.push(entries + (entries > 1 ? " entries" : " entry"));
  if (beats) parts.push(beats + (beats > 1 ? " heartbeats" : " heartbeat"));
  $("unreadable").textContent = parts.length ? parts.join(" and ") +
    " could not be read (not written by backends), skipped: " +
    view.unreadable.slice(0, 5).map((u) => u.name + " (" + u.reason + ")").join(", ") : "";
  $("unreadable").style.display = parts.length ? "block" : "none";
}
function draw() {
  skipped();
  const lanes = $("lanes");
  lanes.replaceChildren();
  $("empty").textContent = view.events.length || view.processes.length ? "" : "no events yet";
  const byColumn = new Map();
  for (const p of view.processes) byColumn.set(p.column, {name: p.process, state: p.state, events: []});
  for (const e of view.events) {
    if (!byColumn.has(e.column)) byColumn.set(e.column, {name: e.process, state: "gone", events: []});
    byColumn.get(e.column).events.push(e);
  }
  for (const [column, lane] of [...byColumn.entries()].sort((a, b) => a[0] - b[0])) {
    const box = el("section", "lane " + lane.state);
    box.dataset.process = lane.name;
    const title = el("h2");
    title.append(el("span", "", "[" + column + "] " + lane.name), el("span", "state", lane.state));
    const list = el("ol");
    for (const e of lane.events.slice().reverse()) {
      const item = el("li", e.trouble ? "trouble" : e.slow ? "slow" : "");
      item.append(el("span", "age", age(now() - e.time)), document.createTextNode(e.text));
      item.dataset.time = e.time;
      list.append(item);
    }
    box.append(title, list);
    lanes.append(box);
  }
}
function tick() {
  for (const item of document.querySelectorAll("li[data-time]")) {
    item.firstChild.textContent = age(now() - Number(item.dataset.time));
  }
}
async function poll() {
  try {
    const answer = await fetch("status.json", {cache: "no-store"});
    const data = await answer.json();
    if (!answer.ok) throw new Error(data.error || answer.statusText);
    view = data; skew = Date.now() / 1000 - data.now;
    $("banner").style.display = "none";
    $("stream").textContent = "stream " + data.stream;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    draw();
  } catch (error) {
    $("banner").textContent = "Cannot read the events (" + error.message + "); trying again.";
    $("banner").style.display = "block";
  }
}
poll();
setInterval(poll, 2000);
setInterval(tick, 1000);
</script></body></html>
"""


def make_app(
    url: str,
    *,
    stream: str = DEFAULT_STREAM,
    count: int = 200,
    password: str | None = None,
    timeout: float = 5.0,
) -> App:
    """A WSGI app showing ``stream`` on the Redis server at ``url``.

    A password goes in ``password=`` or ``REDISCLI_AUTH``, never in the URL.
    Every argument is checked here (ValueError naming it), not at the first
    request. ``timeout``: seconds Redis has to answer each request (tried
    twice); past it ``/status.json`` answers 503 with the error, as JSON.
    """
    from ..redis.client import import_redis, make_client
    from ..redis.streamread import read_view

    check_status_url(url)
    check_stream(stream)
    check_count(count)
    timeout = check_timeout(timeout)
    redis = import_redis()
    state: dict[str, Any] = {"pid": -1}

    def client() -> Any:
        if state["pid"] != os.getpid():  # one pool per process, made there (forking servers)
            made = make_client(
                url, password=password, username=None, max_connections=4, timeout=timeout, retries=1
            )
            state.update(pid=os.getpid(), client=made)
        return state["client"]

    def view() -> tuple[str, dict[str, Any]]:
        failure: BackendError
        try:
            found = read_view(client(), stream, count)
        except redis.RedisError as exc:
            failure = reading_error(exc, client(), stream, timeout)  # the command's very words
        else:
            now = time.time()
            data = summary(found.events, found.processes, now, found.unreadable)
            return "200 OK", {**data, "now": now, "stream": stream}
        return "503 Service Unavailable", {"error": str(failure)}

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _answer(
                start_response, "405 Method Not Allowed", "text/plain", b"GET only\n", method=method
            )
        if path == "/status.json":
            status, data = view()
            # ASCII: a lone surrogate of a key is its \u escape, and the body stays UTF-8
            return _answer(
                start_response, status, "application/json", json.dumps(data).encode(), method=method
            )
        if path in ("/", "/status"):
            nonce = secrets.token_urlsafe(16)
            policy = (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                "connect-src 'self'"
            )
            page = PAGE.replace("__NONCE__", nonce).encode()
            return _answer(
                start_response, "200 OK", "text/html; charset=utf-8", page, method=method, policy=policy
            )
        return _answer(
            start_response, "404 Not Found", "text/plain", b"not found: try /status\n", method=method
        )

    return app


def _answer(
    start_response: StartResponse,
    status: str,
    kind: str,
    body: bytes,
    *,
    method: str,
    policy: str | None = None,
) -> list[bytes]:
    headers = [("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    headers.append(("X-Content-Type-Options", "nosniff"))
    if status.startswith("405"):
        headers.append(("Allow", "GET, HEAD"))
    if policy:
        headers.append(("Content-Security-Policy", policy))
    start_response(status, headers)
    return [] if method == "HEAD" else [body]  # HEAD: the headers GET would send, and no body


def server(app: App, address: str) -> Any:
    """A threading WSGI server of the standard library for ``app`` on ``HOST:PORT`` (port 0: any free one).

    A bad address is a ValueError (before any I/O); one that cannot be bound, an OSError saying so.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per poll would drown the terminal

    host, port = parse_address(address)
    try:
        return make_server(host, port, app, server_class=Server, handler_class=Quiet)
    except OSError as exc:  # in use, not this machine's address, a name that does not resolve
        reason = exc.strerror or type(exc).__name__
        failure = OSError(exc.errno, f"cannot serve on {address}: {reason}")
    raise failure  # out of the except: one line, no chain to print


def parse_address(address: object) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT``: 127.0.0.1; ``[::1]:PORT``: IPv6) as (host, port); else ValueError.

    The port is 0 (any free one) to 65535; the host is printable ASCII.
    """
    text = address if isinstance(address, str) else ""
    found = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]*):([0-9]{1,5})", text)
    if found is None:
        raise ValueError("the address to serve on is HOST:PORT, e.g. 127.0.0.1:8080 (or [::1]:8080)")
    host, port = found.group(1).strip("[]") or "127.0.0.1", int(found.group(2))
    if port > 65535:
        raise ValueError(f"the port to serve on is 0 (any free one) to 65535, not {port}")
    return host, port


def serve(app: App, address: str) -> None:
    """Serve ``app`` on ``HOST:PORT`` until interrupted, saying where."""
    with server(app, address) as running:
        host, port = running.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        print(f"backends status: serving http://{shown}:{port}/status", flush=True)
        running.serve_forever()
