"""Measuring on another device through its measurement server (``nas device serve``).

:class:`DeviceClient` speaks the server's REST shape (``nas.latency.device_server``) with urllib.
:func:`use_device` makes a server the *measuring device* of the process: while it is active,
``nas.latency.measure`` sends its graphs there instead of timing them here (units, networks, the
reference, ONNX files: the same ``timed`` path, with :class:`RemoteGraph` runners), and
``nas.latency.device.this_device`` is the server's fingerprint, so a table built or validated that
way is the server's device's table.

A connection that fails (refused, reset, timed out) or a server busy with other clients (503) is
retried; a measurement is a pure function of its request, so sending it again is safe. A refused
request (wrong token, bad model, too large) is not retried: one line naming the server's reason (a
:class:`DeviceError`, a NasError).

The token is read from ``--token-file`` or the file named by ``NAS_DEVICE_TOKEN_FILE``; it is sent
only as a header and never printed. ``NAS_DEVICE_RETRIES`` sets the retries (default 4: waits of 1,
2, 4 and 8 s).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit

from nas.errors import NasError
from nas.latency.standalone_measure import Measurement, Protocol, device_id

TOKEN_FILE_ENV = "NAS_DEVICE_TOKEN_FILE"
RETRIES_ENV = "NAS_DEVICE_RETRIES"  # attempts after the first on a failed connection (default RETRIES)
API_VERSION = "nas-device-server/1"
RETRIES = 4
RETRY_DELAY_S = 1.0       # doubled after each failed attempt
CONNECT_TIMEOUT_S = 30.0  # a fingerprint
MEASURE_TIMEOUT_S = 3600.0  # a measurement (a group of graphs, timed on the device)
BUSY = 503  # the server's queue is full: retried like a failed connection
UNKNOWN_REFERENCE = 409  # the server no longer keeps the reference named by its hash: send it again


class DeviceError(NasError):
    """The measurement server refused a request (``status``: its HTTP status) or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def is_device_url(value: object) -> bool:
    """Whether a --device value names a measurement server (http:// or https://) rather than a device id."""
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def check_url(url: str) -> str:
    """The server's base URL (no trailing slash); DeviceError for one that is not http(s)://HOST[:PORT][/PATH]."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DeviceError(f"--device {url[:80]!r}: not a URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise DeviceError(f"--device {url[:80]!r}: expected http://HOST:PORT or https://HOST:PORT")
    if parts.username or parts.password:
        raise DeviceError("--device: put no credentials in the URL; give the token with --token-file")
    if parts.query or parts.fragment:
        raise DeviceError(f"--device {url[:80]!r}: expected no query or fragment")
    del port
    return url.rstrip("/")


def retries_from_env() -> int:
    """Retries after a failed connection: ``NAS_DEVICE_RETRIES`` (0 to 20), else :data:`RETRIES`."""
    text = os.environ.get(RETRIES_ENV, "").strip()
    if not text:
        return RETRIES
    if not text.isascii() or not text.isdigit() or int(text) > 20:
        raise DeviceError(f"{RETRIES_ENV}={text[:20]!r}: expected a whole number from 0 to 20")
    return int(text)


def read_token_file(path: str | os.PathLike | None) -> str | None:
    """The token of ``path``, else of the file named by ``NAS_DEVICE_TOKEN_FILE``, else None."""
    path = path or os.environ.get(TOKEN_FILE_ENV) or None
    if path is None:
        return None
    from nas.latency.device_server import read_token

    try:
        return read_token(path)
    except ValueError as exc:
        raise DeviceError(str(exc)) from None


@dataclass(frozen=True)
class RemoteGraph:
    """A runner stand-in for a graph timed on the server: the ONNX bytes it sends."""

    onnx: bytes

    def __call__(self) -> object:
        raise RuntimeError("a remote graph runs on its measurement server, not here")


class DeviceClient:
    """A measurement server at ``url`` (``token``: sent as a bearer token)."""

    def __init__(self, url: str, token: str | None = None, retries: int | None = None,
                 retry_delay: float = RETRY_DELAY_S) -> None:
        self.url = check_url(url)
        self._token = token
        self.retries = retries_from_env() if retries is None else retries
        self.retry_delay = retry_delay
        self._described: dict[int, dict] = {}
        self._sent_references: set[str] = set()  # hashes of the reference graphs the server has accepted

    def __repr__(self) -> str:  # never the token
        return f"DeviceClient({self.url!r})"

    # --- requests ---------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None, timeout: float) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        delay, attempt = self.retry_delay, 0
        while True:
            request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (checked scheme)
                    return self._json(response.read(), response.status)
            except urllib.error.HTTPError as exc:
                if exc.code != BUSY or attempt >= self.retries:
                    raise DeviceError(f"device server {self.url}: {self._refusal(exc)}", exc.code) from None
                attempt += 1  # busy with other clients' requests: wait and send it again
                time.sleep(delay)
                delay *= 2
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException, socket.timeout,
                    TimeoutError, OSError) as exc:
                attempt += 1
                if attempt > self.retries:
                    reason = getattr(exc, "reason", exc)
                    raise DeviceError(f"device server {self.url} unreachable after {attempt} attempt(s): "
                                      f"{_one_line(reason)}") from None
                time.sleep(delay)
                delay *= 2

    def _json(self, raw: bytes, status: int) -> dict:
        try:
            reply = json.loads(raw)
        except ValueError:
            raise DeviceError(f"device server {self.url}: HTTP {status} reply is not JSON") from None
        if not isinstance(reply, dict):
            raise DeviceError(f"device server {self.url}: HTTP {status} reply is not a JSON object")
        if reply.get("api") != API_VERSION:
            raise DeviceError(f"device server {self.url}: speaks {str(reply.get('api'))[:40]!r}, not {API_VERSION!r}")
        return reply

    @staticmethod
    def _refusal(exc: urllib.error.HTTPError) -> str:
        try:
            message = json.loads(exc.read()).get("error")
        except (ValueError, AttributeError, OSError):
            message = None
        return f"HTTP {exc.code}: {_one_line(message or exc.reason)}"

    # --- the API ------------------------------------------------------------------------------------------

    def describe(self, threads: int = 1) -> dict:
        """The server's ``GET /fingerprint`` reply for ``threads`` (kept for the client's life)."""
        if threads not in self._described:
            reply = self._request("GET", f"/fingerprint?threads={int(threads)}", None, CONNECT_TIMEOUT_S)
            if not isinstance(reply.get("fingerprint"), dict):
                raise DeviceError(f"device server {self.url}: the reply has no fingerprint")
            self._described[threads] = reply
        return self._described[threads]

    def fingerprint(self, threads: int = 1) -> dict:
        """The device's fingerprint with its device id (``standalone_measure.device_id``)."""
        device = dict(self.describe(threads)["fingerprint"])
        device["id"] = device_id(device)
        return device

    def measure(self, graphs: dict[str, bytes], protocol: Protocol, reference: bytes | None = None,
                reference_ms: float | None = None) -> dict[str, Measurement]:
        """Time ``graphs`` (name -> ONNX bytes) on the device with ``protocol`` (paired with
        ``reference`` on the time base ``reference_ms`` when ``protocol.reference_runs`` > 0). Graphs
        that do not fit in one request of the server's size limit are sent in several (each timed
        interleaved within its request). The reference is sent once, then named by its hash."""
        encoded = {name: base64.b64encode(data).decode("ascii") for name, data in graphs.items()}
        digest = None if reference is None else hashlib.sha256(reference).hexdigest()
        full = {"protocol": protocol.as_dict(), "graphs": {}, "reference_ms": reference_ms,
                "reference": None if reference is None else base64.b64encode(reference).decode("ascii")}
        limit = (self.describe(protocol.threads).get("limits") or {}).get("max_body_bytes")
        out: dict[str, Measurement] = {}
        for names in self._batches(encoded, len(json.dumps(full)), limit):
            batch = {name: encoded[name] for name in names}
            out.update(self._measure_batch({**full, "graphs": batch}, digest))
        return out

    def _measure_batch(self, body: dict, digest: str | None) -> dict[str, Measurement]:
        if digest is not None and digest in self._sent_references:
            try:
                reply = self._request("POST", "/measure", {**body, "reference": None, "reference_sha256": digest},
                                      MEASURE_TIMEOUT_S)
                return self._measurements(reply, body["graphs"])
            except DeviceError as exc:
                if exc.status != UNKNOWN_REFERENCE:
                    raise
                self._sent_references.discard(digest)
        reply = self._request("POST", "/measure", body, MEASURE_TIMEOUT_S)
        if digest is not None:
            self._sent_references.add(digest)
        return self._measurements(reply, body["graphs"])

    def _batches(self, encoded: dict[str, str], base_size: int, limit) -> list[list[str]]:
        """The graphs' names in request-sized batches (one batch when the server gives no limit)."""
        if not isinstance(limit, int) or isinstance(limit, bool):
            return [list(encoded)]
        batches: list[list[str]] = [[]]
        size = base_size
        for name, text in encoded.items():
            item = len(name) + len(text) + 8  # "name": "text",
            if base_size + item > limit:
                raise DeviceError(f"device server {self.url}: graph {name!r} ({base_size + item:,} bytes with the "
                                  f"request) exceeds its limit of {limit:,} bytes (start the server with a larger "
                                  f"--max-bytes)")
            if size + item > limit and batches[-1]:
                batches.append([])
                size = base_size
            batches[-1].append(name)
            size += item
        return batches

    def _measurements(self, reply: dict, graphs: dict) -> dict[str, Measurement]:
        rows = reply.get("measurements")
        if not isinstance(rows, dict) or set(rows) != set(graphs):
            raise DeviceError(f"device server {self.url}: the reply does not time the graphs sent")
        out = {}
        for name, row in rows.items():
            try:
                m = Measurement(median_ms=float(row["median_ms"]), iqr_ms=float(row["iqr_ms"]), runs=int(row["runs"]))
            except (TypeError, KeyError, ValueError):
                raise DeviceError(f"device server {self.url}: a malformed measurement of {name!r}") from None
            if not (m.median_ms > 0 and m.iqr_ms >= 0 and m.runs >= 1 and m.median_ms < float("inf")):
                raise DeviceError(f"device server {self.url}: an impossible measurement of {name!r}")
            out[name] = m
        return out


def _one_line(value: object) -> str:
    lines = str(value).strip().splitlines()
    return (lines[0] if lines else type(value).__name__)[:300]


# --- the measuring device of this process ---------------------------------------------------------------------

_ACTIVE: DeviceClient | None = None


def active() -> DeviceClient | None:
    """The server measurements go to (None: this machine)."""
    return _ACTIVE


@contextlib.contextmanager
def use_device(url: str | None, token_file: str | os.PathLike | None = None) -> Iterator[DeviceClient | None]:
    """Within the block, measure on the server at ``url`` (None: on this machine, nothing changes).
    Its fingerprint is fetched first, so an unreachable server or a wrong token fails at once."""
    global _ACTIVE
    if url is None:
        yield None
        return
    client = DeviceClient(url, read_token_file(token_file))
    client.describe(1)
    previous, _ACTIVE = _ACTIVE, client
    try:
        yield client
    finally:
        _ACTIVE = previous
