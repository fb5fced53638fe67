"""A measurement server for a target device: ONNX graphs in, timings and the device's fingerprint out.

Runs on the device with the standard library, numpy and onnxruntime only (``onnx`` is used to check
models when it is installed), either as ``nas device serve`` or from the kernels folder that
``nas lut export-kernels`` writes (``python3 device_server.py``, which imports
``standalone_measure.py`` beside it). The timing is :func:`standalone_measure.time_interleaved`: the same protocol as
every local measurement and every table.

REST (JSON bodies, ``Content-Type: application/json``; with a token, every request carries
``Authorization: Bearer TOKEN``):

``GET /fingerprint?threads=N``
    ``{"api": "nas-device-server/1", "fingerprint": {...}, "limits": {"max_body_bytes": ..., ...}}``;
    the fingerprint has the fields of ``standalone_measure.device_fingerprint`` (CPU model, cores,
    ISA flags, OS, versions, runtime, threads) and the device id (``device_id``: the host
    computes it again from the fields).
``POST /measure``
    request ``{"graphs": {"NAME": "<base64 ONNX>", ...}, "protocol": {Protocol fields},
    "reference": "<base64 ONNX>" | null, "reference_sha256": "<hex>" | null, "reference_ms": float | null}``
    (the paired protocol, ``protocol.reference_runs`` > 0, needs ``reference_ms`` and the reference
    graph: its bytes, or the SHA-256 of a reference the server has been sent before, which it keeps
    (the last ``CACHED_REFERENCES``) so that a build sends its reference once; an unknown hash is 409);
    reply ``{"api": ..., "measurements": {"NAME": {"median_ms", "iqr_ms", "runs"}}, "fingerprint": {...}}``.

Errors are ``{"error": "one line"}`` with an HTTP status: 400 (not JSON, a bad field, a graph that
is not a valid ONNX model of onnxruntime's built-in operator sets or does not run), 401 (missing or wrong
token), 404, 409 (an unknown reference_sha256), 411 (no Content-Length), 413 (body over the limit),
503 (more than ``MAX_QUEUED`` measurement requests at once; the client retries). The server keeps
serving after any of them.

Safety: binds to 127.0.0.1 unless told otherwise; the token is compared in constant time and never
echoed; bodies over ``max_body_bytes`` are refused before they are parsed; models are checked with
``onnx.checker`` when onnx is installed (else an onnxruntime session that cannot be created is the
refusal); operator domains onnxruntime does not implement itself (custom ops) and tensors stored
outside the model (external data) are refused; no custom-op library is ever registered; requests are measured
one at a time (a lock), so two clients never time at once, and at most ``MAX_QUEUED`` request
bodies are held at once.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

if __package__:
    from .standalone_measure import (_GRAPH_ID, ManifestError, Measurement, Protocol, check_protocol,
                                     device_fingerprint, device_id, ort_runner, ort_session, time_interleaved)
else:  # the copy in a kernels folder, run as a script beside standalone_measure.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from standalone_measure import (_GRAPH_ID, ManifestError, Measurement, Protocol, check_protocol,  # type: ignore
                                    device_fingerprint, device_id, ort_runner, ort_session, time_interleaved)

API_VERSION = "nas-device-server/1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_BODY_BYTES = 64 << 20
MAX_GRAPHS = 256
SOCKET_TIMEOUT_S = 120.0
MAX_INPUT_ELEMENTS = 1 << 26  # values of a graph's (one, batch-1) input
CACHED_REFERENCES = 4  # reference graphs kept by hash (a build sends its reference once)
MAX_QUEUED = 4  # measurement requests held at once (one timed, the others waiting): more get 503
MAX_TIMED_CALLS = 20_000   # runs x passes per graph and round
MAX_WARMUP = 1_000
MAX_REFERENCE_RUNS = 1_000
MAX_REMEASURE = 5
# Operator domains onnxruntime implements itself: the ONNX standard, ONNX-ML and its own contrib operators
# (com.microsoft, e.g. in quantised models). Any other domain needs a custom-op library: refused.
BUILT_IN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
DRAIN_FACTOR = 4  # an oversized body up to this many times the limit is read and discarded (the client sees the 413)


class RequestError(Exception):
    """A refused request: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES


def read_token(path: str | os.PathLike) -> str:
    """The token in a file (one line; surrounding whitespace ignored); ValueError when empty or unreadable."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"token file {path}: cannot read ({type(exc).__name__})") from None
    if not token or len(token) > 4096 or any(c.isspace() for c in token):
        raise ValueError(f"token file {path}: expected one token of 1 to 4096 non-space characters")
    return token


# --- checking a request -----------------------------------------------------------------------------------

def check_request_protocol(settings) -> Protocol:
    """The request's protocol, checked like a manifest's and within the server's limits."""
    try:
        protocol = check_protocol(settings, "protocol")
    except ManifestError as exc:
        raise RequestError(400, str(exc)) from None
    cores = os.cpu_count() or 1
    if protocol.threads > cores:
        raise RequestError(400, f"protocol: threads {protocol.threads} exceeds this device's {cores} cores")
    if (protocol.runs * protocol.passes > MAX_TIMED_CALLS or protocol.warmup > MAX_WARMUP
            or protocol.reference_runs > MAX_REFERENCE_RUNS or protocol.remeasure > MAX_REMEASURE):
        raise RequestError(400, f"protocol: over the server's limits (runs x passes <= {MAX_TIMED_CALLS}, warmup <= "
                                f"{MAX_WARMUP}, reference_runs <= {MAX_REFERENCE_RUNS}, remeasure <= {MAX_REMEASURE})")
    return protocol


def decode_graph(text, name: str) -> bytes:
    if not isinstance(text, str):
        raise RequestError(400, f"graph {name!r}: expected a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"graph {name!r}: not valid base64") from None


def check_model(data: bytes, name: str) -> None:
    """Refuse (400) anything that is not a valid ONNX model of onnxruntime's built-in operator sets
    with its tensors inside it. With onnx installed: ``onnx.checker`` and the model's domains; without it the
    onnxruntime session creation that follows is the check (a custom-op domain has no kernels there)."""
    try:
        import onnx
    except ImportError:
        return
    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ... for bad bytes
        raise RequestError(400, f"graph {name!r}: not a valid ONNX model ({_first_line(exc)})") from None
    domains = {o.domain for o in model.opset_import}
    for function in model.functions:
        domains |= {function.domain} | {o.domain for o in function.opset_import}
    custom = sorted(domains - BUILT_IN_DOMAINS)
    if custom:
        raise RequestError(400, f"graph {name!r}: custom operator domain {custom[0][:60]!r} is not served "
                                f"(only onnxruntime's built-in operators)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise RequestError(400, f"graph {name!r}: tensors stored outside the model (external data) are not served")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def load_runner(data: bytes, name: str, protocol: Protocol):
    """A runner of the graph (the protocol's session options), tried once; 400 when it does not load or run."""
    check_model(data, name)
    try:
        session = ort_session(data, protocol.threads)
    except Exception as exc:  # onnxruntime's own exception types
        raise RequestError(400, f"graph {name!r}: not a loadable ONNX model ({_first_line(exc)})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise RequestError(400, f"graph {name!r}: expected one input, got {len(inputs)}")
    elements = math.prod(d if isinstance(d, int) and d > 0 else 1 for d in inputs[0].shape)
    if elements > MAX_INPUT_ELEMENTS:
        raise RequestError(400, f"graph {name!r}: an input of {elements:,} values is over the limit of "
                                f"{MAX_INPUT_ELEMENTS:,}")
    runner = ort_runner(session, protocol.seed)
    try:
        runner()
    except Exception as exc:
        raise RequestError(400, f"graph {name!r}: does not run on one batch-1 input ({_first_line(exc)})") from None
    return runner


def _positive_ms(value) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 0 < value < 1e9):
        raise RequestError(400, "reference_ms: expected a positive number of milliseconds")
    return float(value)


def measure_request(body, references: "OrderedDict[str, bytes] | None" = None) -> dict[str, Measurement]:
    """Check a ``POST /measure`` body and time its graphs (the caller holds the measuring lock);
    ``references`` (hash -> ONNX bytes) keeps the reference graphs sent, for requests naming them by hash."""
    if not isinstance(body, dict):
        raise RequestError(400, "expected a JSON object")
    unknown = sorted(set(body) - {"graphs", "protocol", "reference", "reference_sha256", "reference_ms"})
    if unknown:
        raise RequestError(400, f"unknown field {str(unknown[0])[:40]!r}")
    protocol = check_request_protocol(body.get("protocol"))
    graphs = body.get("graphs")
    if not isinstance(graphs, dict) or not 1 <= len(graphs) <= MAX_GRAPHS:
        raise RequestError(400, f"graphs: expected a mapping of 1 to {MAX_GRAPHS} names to base64 ONNX models")
    for name in graphs:
        if not _GRAPH_ID.fullmatch(name):
            raise RequestError(400, f"graph name {name[:60]!r} is not 1 to 200 of [a-z0-9_:.]")
    reference, reference_ms = None, None
    if protocol.reference_runs:
        if body.get("reference_ms") is None:
            raise RequestError(400, "the paired protocol (reference_runs > 0) needs reference and reference_ms")
        reference_ms = _positive_ms(body["reference_ms"])
        data = reference_graph(body, references)
        reference = load_runner(data, "reference", protocol)
        if references is not None and body.get("reference") is not None:
            keep_reference(references, data)
    runners = {name: load_runner(decode_graph(text, name), name, protocol) for name, text in graphs.items()}
    return time_interleaved(runners, protocol, reference, reference_ms)


def reference_graph(body: dict, references: "OrderedDict[str, bytes] | None") -> bytes:
    """The request's reference graph: sent, or named by the hash of one kept."""
    if body.get("reference") is not None:
        return decode_graph(body["reference"], "reference")
    digest = body.get("reference_sha256")
    if digest is None:
        raise RequestError(400, "the paired protocol (reference_runs > 0) needs reference and reference_ms")
    if not isinstance(digest, str) or references is None or digest not in references:
        raise RequestError(409, "reference_sha256: no such reference here; send the reference itself")
    references.move_to_end(digest)
    return references[digest]


def keep_reference(references: "OrderedDict[str, bytes]", data: bytes) -> None:
    """Keep a checked reference graph by its SHA-256 (the last :data:`CACHED_REFERENCES`)."""
    digest = hashlib.sha256(data).hexdigest()
    references[digest] = data
    references.move_to_end(digest)
    while len(references) > CACHED_REFERENCES:
        references.popitem(last=False)


# --- HTTP -------------------------------------------------------------------------------------------------

class DeviceServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, config: ServerConfig, log=None) -> None:
        self.config = config
        self.measuring = threading.Lock()  # one measurement at a time
        self.queue = threading.BoundedSemaphore(MAX_QUEUED)  # bodies held in memory at once
        self.references: OrderedDict[str, bytes] = OrderedDict()  # kept reference graphs (under `measuring`)
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        super().__init__((config.host, config.port), Handler)


class Handler(BaseHTTPRequestHandler):
    server: DeviceServer
    server_version = "nas-device-server"
    sys_version = ""
    timeout = SOCKET_TIMEOUT_S  # a client that stops sending is dropped, not waited for

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        self.server.log(f"{self.address_string()} {format % args}")

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._handle(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._handle(self._post)

    def _handle(self, action) -> None:
        try:
            self._authorize()
            status, reply = action(urlsplit(self.path))
        except RequestError as exc:
            status, reply = exc.status, {"error": exc.message}
        except TimeoutError:  # the client stopped sending its body
            self.close_connection = True
            return
        except Exception as exc:  # a bug of the server: still one JSON line, and keep serving
            self.server.log(f"internal error: {type(exc).__name__}: {_first_line(exc)}")
            status, reply = 500, {"error": f"internal error ({type(exc).__name__})"}
        self._reply(status, reply)

    def _authorize(self) -> None:
        token = self.server.config.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        ok = hmac.compare_digest(value.strip().encode("utf-8", "replace"), token.encode("utf-8"))
        if scheme.lower() != "bearer" or not ok:
            self._drain_body()
            raise RequestError(401, "missing or wrong token (send it as 'Authorization: Bearer TOKEN')")

    def _get(self, url):
        if url.path != "/fingerprint":
            raise RequestError(404, f"no such endpoint: GET {url.path[:80]} (GET /fingerprint, POST /measure)")
        threads = parse_qs(url.query).get("threads", ["1"])[-1]
        if not threads.isascii() or not threads.isdigit() or not 1 <= int(threads) <= 4096:
            raise RequestError(400, "threads: expected a whole number from 1 to 4096")
        return 200, self._describe(int(threads))

    def _describe(self, threads: int) -> dict:
        return {"api": API_VERSION, "fingerprint": fingerprint(threads),
                "limits": {"max_body_bytes": self.server.config.max_body_bytes, "max_graphs": MAX_GRAPHS,
                           "max_timed_calls": MAX_TIMED_CALLS, "cores": os.cpu_count()}}

    def _post(self, url):
        if url.path != "/measure":
            self._drain_body()
            raise RequestError(404, f"no such endpoint: POST {url.path[:80]} (GET /fingerprint, POST /measure)")
        if not self.server.queue.acquire(blocking=False):
            self._drain_body()
            raise RequestError(503, f"busy: {MAX_QUEUED} measurement requests are already queued; retry later")
        try:
            raw = self._read_body()
            try:
                body = json.loads(raw, parse_constant=_refuse_constant)
            except (ValueError, RecursionError):
                raise RequestError(400, "the body is not a JSON object") from None
            del raw
            with self.server.measuring:
                measurements = measure_request(body, self.server.references)
        finally:
            self.server.queue.release()
        threads = body["protocol"].get("threads", 1)
        return 200, {"api": API_VERSION, "fingerprint": fingerprint(threads),
                     "measurements": {name: {"median_ms": m.median_ms, "iqr_ms": m.iqr_ms, "runs": m.runs}
                                      for name, m in measurements.items()}}

    def _content_length(self) -> int | None:
        text = self.headers.get("Content-Length")
        if text is None:
            return None
        if not text.isascii() or not text.strip().isdigit() or len(text.strip()) > 15:
            raise RequestError(400, "Content-Length: expected a whole number")
        return int(text)

    def _read_body(self) -> bytes:
        length = self._content_length()
        if length is None:
            self.close_connection = True
            raise RequestError(411, "a request body needs a Content-Length")
        limit = self.server.config.max_body_bytes
        if length > limit:
            self._drain_body()
            raise RequestError(413, f"request body of {length:,} bytes exceeds the limit of {limit:,} bytes")
        return self.rfile.read(length)

    def _drain_body(self) -> None:
        """Read and discard a body the server refuses, so that the client gets the reply (a body far
        over the limit is not read: the connection is closed)."""
        try:
            length = self._content_length()
        except RequestError:
            length = None
        self.close_connection = True
        if not length or length > DRAIN_FACTOR * self.server.config.max_body_bytes:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    def _reply(self, status: int, reply: dict) -> None:
        data = (json.dumps(reply) + "\n").encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client went away; keep serving the others
            self.close_connection = True


def fingerprint(threads: int) -> dict:
    """This device's fingerprint on onnxruntime with ``threads`` threads, with its device id."""
    device = device_fingerprint("onnxruntime", threads)
    return {**device, "id": device_id(device)}


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def serve(config: ServerConfig) -> None:
    """Serve until interrupted."""
    server = DeviceServer(config)
    host, port = server.server_address[:2]
    server.log(f"nas device server ({API_VERSION}) on http://{host}:{port}"
               f"{' (token required)' if config.token else ''}; one measurement at a time; Ctrl-C stops it")
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.token:
        server.log("warning: listening beyond this machine without a token (--token-file): anyone who reaches "
                   "the port can keep this device busy")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


_HOST = re.compile(r"[A-Za-z0-9.:_-]{1,253}", re.ASCII)  # a host name, IPv4 or IPv6 address


def whole_number(minimum: int, maximum: int):
    """An argparse type: ASCII digits within [minimum, maximum]."""

    def parse(text: str) -> int:
        text = text.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 12 or not minimum <= int(text) <= maximum:
            raise argparse.ArgumentTypeError(f"expected a whole number from {minimum:,} to {maximum:,}, "
                                             f"got {text[:40]!r}")
        return int(text)

    parse.__name__ = "integer"
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=whole_number(0, 65535), default=DEFAULT_PORT,
                        help=f"TCP port (default {DEFAULT_PORT}; 0: any free one)")
    parser.add_argument("--token-file", metavar="FILE",
                        help="require 'Authorization: Bearer TOKEN' with the token in FILE")
    parser.add_argument("--max-bytes", type=whole_number(1, 1 << 32), default=MAX_BODY_BYTES,
                        help=f"largest request body accepted (default {MAX_BODY_BYTES:,} bytes)")


def config_from(args: argparse.Namespace) -> ServerConfig:
    """The server's settings from parsed arguments (ValueError names a bad one)."""
    if not isinstance(args.host, str) or not _HOST.fullmatch(args.host):
        raise ValueError(f"--host {str(args.host)[:60]!r}: expected a host name or an IP address")
    token = read_token(args.token_file) if args.token_file else None
    return ServerConfig(host=args.host, port=args.port, token=token, max_body_bytes=args.max_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="device_server.py",
                                     description="Serve measurements of ONNX graphs on this device over HTTP.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from(args)
        serve(config)
    except (OSError, ValueError) as exc:
        print(f"device server: error: {_first_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
