"""The measurement server (``nas device serve``, the kernels folder's ``device_server.py``) and ``--device URL``.

Every server here runs in a subprocess where torch cannot be imported (the standalone script's: nor
nas); requests go to it over localhost.
"""

import base64
import contextlib
import http.client
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from nas.latency.device import device_id
from nas.latency.keys import space_unit_keys
from nas.latency.standalone_measure import Protocol, cpu_model
from nas.latency.table import ENTRIES, load_table
from nas.spec import load_space
from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.latency_helpers import write_space

TOKEN = "t0ken-for-tests-4f1e"
MAX_BYTES = 200_000
FAST = Protocol(warmup=1, runs=25, passes=4, remeasure=0)
FAST_ARGS = ("--runs", "25", "--passes", "4", "--reference-runs", "2")

# Runs `nas device serve ...` (or, with a script path first, that script) where torch cannot be
# imported; with BLOCK_NAS, nas neither (a device with numpy and onnxruntime only).
NO_TORCH = """
import runpy, sys
blocked = ("torch", "nas") if sys.argv[1] == "script" else ("torch",)
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} cannot be imported on this device")
sys.meta_path.insert(0, NoTorch())
if sys.argv[1] == "script":
    sys.path = [p for p in sys.path if p not in ("", ".") and "wt-" not in p]
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
else:
    sys.argv = ["nas", *sys.argv[2:]]
    runpy.run_module("nas", run_name="__main__")
"""
LISTENING = re.compile(r"on (http://127\.0\.0\.1:\d+)")


class Server:
    """A server subprocess; ``url`` once it listens."""

    def __init__(self, log: Path, *args: str, script: Path | None = None, cwd: Path = ROOT) -> None:
        mode = ["script", str(script)] if script else ["nas", "device", "serve"]
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-c", NO_TORCH, *mode, "--port", "0", *args],
                                     cwd=cwd, stdout=subprocess.DEVNULL, stderr=log.open("w"))
        self.url = self._wait_listening()

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log.read_text())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited: {self.log.read_text()}")
            time.sleep(0.02)
        raise AssertionError("the server did not start listening")

    def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    (folder / "token").write_text(TOKEN + "\n")
    srv = Server(folder / "server.log", "--token-file", str(folder / "token"), "--max-bytes", str(MAX_BYTES))
    srv.token_file = folder / "token"
    yield srv
    srv.stop()
    assert TOKEN not in srv.log.read_text()


def request(url: str, method: str = "GET", body: bytes | None = None, token: str | None = TOKEN,
            headers: dict | None = None) -> tuple[int, dict]:
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def onnx_model(op: str = "Relu", domain: str = "", inputs: int = 1, shape: tuple = (1, 8)) -> bytes:
    from onnx import TensorProto, helper

    names = ["x", "z"][:inputs]
    node = helper.make_node(op, names, ["y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in names],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString()


def measure_body(graphs: dict[str, bytes], protocol: Protocol = FAST, **extra) -> bytes:
    body = {"protocol": protocol.as_dict(),
            "graphs": {name: base64.b64encode(data).decode() for name, data in graphs.items()}, **extra}
    return json.dumps(body).encode()


def test_fingerprint_of_a_server_without_torch(server):
    status, reply = request(server.url + "/fingerprint?threads=1")
    assert status == 200
    fingerprint = reply["fingerprint"]
    assert fingerprint["cpu_model"] == cpu_model() and fingerprint["threads"] == 1
    assert fingerprint["runtime"] == "onnxruntime" and "torch" not in fingerprint
    assert fingerprint["id"] == device_id(fingerprint)
    assert reply["limits"]["max_body_bytes"] == MAX_BYTES


def test_measure_returns_the_fields_of_a_measurement(server):
    status, reply = request(server.url + "/measure", "POST", measure_body({"a": onnx_model(), "b": onnx_model("Abs")}))
    assert status == 200, reply
    assert set(reply["measurements"]) == {"a", "b"}
    for m in reply["measurements"].values():
        assert set(m) == {"median_ms", "iqr_ms", "runs"} and m["median_ms"] > 0 and m["runs"] == 100
    assert reply["fingerprint"]["cpu_model"] == cpu_model()


def test_paired_request_needs_its_reference(server):
    paired = Protocol(warmup=1, runs=25, passes=4, remeasure=0, reference_runs=2)
    status, reply = request(server.url + "/measure", "POST", measure_body({"a": onnx_model()}, paired))
    assert status == 400 and "reference" in reply["error"]
    body = measure_body({"a": onnx_model()}, paired, reference=base64.b64encode(onnx_model("Abs")).decode(),
                        reference_ms=0.5)
    status, reply = request(server.url + "/measure", "POST", body)
    assert status == 200 and reply["measurements"]["a"]["median_ms"] > 0


def test_a_reference_sent_once_is_then_named_by_its_hash(server):
    import hashlib

    paired = Protocol(warmup=1, runs=25, passes=4, remeasure=0, reference_runs=2)
    reference = onnx_model("Neg")
    by_hash = measure_body({"a": onnx_model()}, paired, reference_sha256=hashlib.sha256(reference).hexdigest(),
                           reference_ms=0.5)
    status, reply = request(server.url + "/measure", "POST", by_hash)
    assert status == 409 and "send the reference" in reply["error"]
    sent = measure_body({"a": onnx_model()}, paired, reference=base64.b64encode(reference).decode(), reference_ms=0.5)
    assert request(server.url + "/measure", "POST", sent)[0] == 200
    assert request(server.url + "/measure", "POST", by_hash)[0] == 200


def test_the_client_sends_the_reference_again_when_the_server_lost_it(server):
    from nas.latency.remote import DeviceClient, read_token_file

    paired = Protocol(warmup=1, runs=25, passes=4, remeasure=0, reference_runs=2)
    client = DeviceClient(server.url, read_token_file(server.token_file))
    client._sent_references.add(__import__("hashlib").sha256(onnx_model("Sigmoid")).hexdigest())  # a restarted server
    before = server.log.read_text().count('"POST /measure HTTP/1.1" 409')
    result = client.measure({"a": onnx_model()}, paired, onnx_model("Sigmoid"), 0.5)
    assert result["a"].runs == 100
    assert server.log.read_text().count('"POST /measure HTTP/1.1" 409') == before + 1


@pytest.mark.parametrize("token", [None, "bad-guess-17", TOKEN + "x", ""])
def test_missing_or_wrong_token_is_refused_and_not_echoed(server, token):
    for method, path, body in (("GET", "/fingerprint", None), ("POST", "/measure", measure_body({"a": onnx_model()}))):
        status, reply = request(server.url + path, method, body, token=token)
        assert status == 401 and "token" in reply["error"]
        assert TOKEN not in json.dumps(reply) and (not token or token not in json.dumps(reply))


@pytest.mark.parametrize("body, fragment", [
    (b"not json", "not a JSON object"),
    (b"[1, 2]", "expected a JSON object"),
    (measure_body({"a": b"this is not an onnx model"}), "not a valid ONNX model"),
    (measure_body({"a": onnx_model("Foo", "com.example")}), "custom operator domain"),
    (measure_body({"a": onnx_model()}, Protocol(runs=10, passes=2)), "runs x passes"),
    (measure_body({"../etc": onnx_model()}), "graph name"),
    (measure_body({}), "graphs"),
    (json.dumps({"protocol": FAST.as_dict(), "graphs": {"a": "%%%"}}).encode(), "base64"),
    (measure_body({"a": onnx_model()}, Protocol(threads=4096)), "cores"),
    (measure_body({"a": onnx_model("Add", inputs=2)}), "expected one input"),
    (measure_body({"a": onnx_model(shape=(1, 1 << 14, 1 << 14))}), "over the limit"),
], ids=["text", "list", "not-onnx", "custom-op", "too-few-calls", "bad-name", "no-graphs", "bad-base64",
        "threads", "two-inputs", "huge-input"])
def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(server, body, fragment):
    status, reply = request(server.url + "/measure", "POST", body)
    assert status == 400 and fragment in reply["error"], reply
    assert request(server.url + "/fingerprint")[0] == 200


def test_oversized_body_is_refused_before_it_is_parsed(server):
    status, reply = request(server.url + "/measure", "POST", b"x" * (MAX_BYTES + 1))
    assert status == 413 and f"{MAX_BYTES:,}" in reply["error"]
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)  # a claimed size far over the limit
    connection.request("POST", "/measure", body=b"{}", headers={"Authorization": f"Bearer {TOKEN}",
                                                                "Content-Length": str(10 ** 12)})
    assert connection.getresponse().status == 413
    connection.close()
    assert request(server.url + "/fingerprint")[0] == 200


def test_unknown_endpoint(server):
    assert request(server.url + "/nope")[0] == 404
    assert request(server.url + "/fingerprint?threads=x")[0] == 400


@pytest.mark.slow
def test_client_errors_are_one_line_with_exit_status_2(server, tmp_path):
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"not an onnx model")
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * MAX_BYTES)
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong-token\n")
    env = {"NAS_DEVICE_RETRIES": "1"}
    measure = ("latency", "measure")
    cases = [
        ((*measure, not_onnx, "--device", server.url, "--token-file", wrong), ("HTTP 401", "token")),
        ((*measure, not_onnx, "--device", server.url, "--token-file", server.token_file), ("HTTP 400", "ONNX")),
        ((*measure, big, "--device", server.url, "--token-file", server.token_file), ("exceeds its limit",)),
        ((*measure, not_onnx, "--device", "http://127.0.0.1:9"), ("unreachable after 2 attempt(s)",)),
        ((*measure, not_onnx, "--device", "ftp://127.0.0.1:9"), ("http://HOST:PORT",)),
    ]
    for args, fragments in cases:
        result = run_cli(*args, env=env)
        assert_one_line_error(result, *fragments)
        assert TOKEN not in result.stderr
    assert request(server.url + "/fingerprint")[0] == 200


def test_measurements_in_a_use_device_block_go_to_the_server(server, tmp_path):
    from nas.errors import NasError
    from nas.latency import MeasureConfig, measure_specs
    from nas.latency.device import this_device
    from nas.latency.remote import active, use_device

    space = load_space(write_space(tmp_path))
    before = _served(server)
    with use_device(server.url, server.token_file) as client:
        assert active() is client and "torch" not in this_device()  # the server's fingerprint, not this process's
        (m,) = measure_specs([space.baseline], MeasureConfig(warmup=1, runs=25, passes=4, remeasure=0))
        assert m.median_ms > 0 and m.runs == 100
        with pytest.raises(NasError, match="onnxruntime"):
            measure_specs([space.baseline], MeasureConfig(runtime="torch", runs=25, passes=4))
    assert active() is None
    assert _served(server) == before + 1  # the one measurement went to the server


def _served(server) -> int:
    return server.log.read_text().count('"POST /measure HTTP/1.1" 200')


def _remote_build(space: Path, out: Path, url: str, token_file: Path, group: int = 4, runs: str = "25") -> list[str]:
    return [sys.executable, "-m", "nas", "lut", "build", "--space", str(space), "--out", str(out), "--runs", runs,
            "--passes", "4", "--reference-runs", "2", "--group", str(group), "--no-progress", "--json",
            "--device", url, "--token-file", str(token_file)]


@pytest.mark.slow
def test_remote_build_has_the_keys_of_a_local_build_and_validates_through_the_server(server, tmp_path):
    space = write_space(tmp_path)
    remote = subprocess.run(_remote_build(space, tmp_path / "remote", server.url, server.token_file), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert remote.returncode == 0, remote.stderr
    local = run_cli("lut", "build", "--space", space, "--out", tmp_path / "local", *FAST_ARGS, "--group", "4",
                    "--no-progress")
    assert local.returncode == 0, local.stderr
    remote_table, local_table = load_table(tmp_path / "remote"), load_table(tmp_path / "local")
    assert set(remote_table.entries.index) == set(local_table.entries.index)
    assert set(remote_table.entries.index) == {k.id for k in space_unit_keys(load_space(space))}
    assert remote_table.calibration is not None and remote_table.meta["reference"]["ms"] > 0
    assert remote_table.device["cpu_model"] == cpu_model() and "torch" not in remote_table.device
    assert json.loads(remote.stdout)["device"] == remote_table.device_id
    validated = run_cli("lut", "validate", tmp_path / "remote", "--samples", "3", "--json", "--device", server.url,
                        "--token-file", server.token_file)
    assert validated.returncode == 0, validated.stderr
    summary = json.loads(validated.stdout)
    assert summary["samples"] == 3 and 0 <= summary["within_10"] <= 1
    # a space's folder of tables: --device URL picks the server's device's table
    folder = tmp_path / "tables" / "tiny"
    folder.mkdir(parents=True)
    (tmp_path / "remote").rename(folder / remote_table.device_id)
    predicted = run_cli("latency", "predict", folder, load_space(space).baseline.to_string(), "--json", "--device",
                        server.url, "--token-file", server.token_file)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["device"] == remote_table.device_id


@pytest.mark.slow
def test_server_killed_mid_build_then_rerun_completes(tmp_path):
    space = write_space(tmp_path)
    out = tmp_path / "table"
    token = tmp_path / "token"
    token.write_text(TOKEN)
    first = Server(tmp_path / "first.log", "--token-file", str(token))
    build = subprocess.Popen(_remote_build(space, out, first.url, token, group=2, runs="100"), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**__import__("os").environ, "NAS_DEVICE_RETRIES": "1"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and build.poll() is None:
            if (out / ENTRIES).is_file() and len((out / ENTRIES).read_text().splitlines()) > 3:
                first.proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        stderr = build.communicate(timeout=120)[1]
    finally:
        first.stop()
        build.kill()
    assert build.returncode == 2 and "unreachable" in stderr.strip().splitlines()[-1], stderr
    partial = pd.read_csv(out / ENTRIES)
    expected = {k.id for k in space_unit_keys(load_space(space))}
    assert 0 < len(partial) < len(expected), "killed too late to test a resume"
    second = Server(tmp_path / "second.log", "--token-file", str(token))
    try:
        rerun = subprocess.run(_remote_build(space, out, second.url, token, group=2), cwd=ROOT, capture_output=True,
                               text=True, timeout=300)
    finally:
        second.stop()
    assert rerun.returncode == 0, rerun.stderr
    rows = pd.read_csv(out / ENTRIES)
    assert sorted(rows["id"]) == sorted(expected)  # no row missing, none twice
    kept = rows.set_index("id").loc[partial["id"], "median_ms"].to_numpy()
    assert (kept == partial["median_ms"].to_numpy()).all()  # rows measured before the kill were kept
    assert load_table(out).calibration is not None


@pytest.mark.slow
def test_the_kernels_folder_script_starts_the_same_server_without_torch_or_nas(tmp_path):
    from nas.latency.kernels import STANDALONE_SCRIPTS, export_kernels

    kernels = tmp_path / "kernels"
    export_kernels(kernels, [], {}, FAST, {}, progress=False)
    assert all((kernels / name).is_file() for name in STANDALONE_SCRIPTS)
    srv = Server(tmp_path / "script.log", script=kernels / "device_server.py", cwd=tmp_path)
    try:
        status, reply = request(srv.url + "/measure", "POST", measure_body({"a": onnx_model()}), token=None)
        assert status == 200 and reply["measurements"]["a"]["runs"] == 100
        assert reply["api"] == "nas-device-server/1"
    finally:
        srv.stop()


@pytest.fixture
def in_process_server(fake_latency_clock):  # after the clock is set for the test
    """A server in this process (for its queue and lock; the subprocess servers above prove torch-free).
    Its graphs run for real (tiny ones), as in any server process."""
    import threading

    from nas.latency.device_server import DeviceServer, ServerConfig

    srv = DeviceServer(ServerConfig(port=0), log=lambda message: None)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    saved, fake_latency_clock.on = fake_latency_clock.on, False  # the pytest fixture's clock, not a copy
    yield srv
    fake_latency_clock.on = saved
    srv.shutdown()
    srv.server_close()


def test_one_measurement_at_a_time(in_process_server):
    import threading

    from nas.latency.device_server import MAX_QUEUED

    srv, replies = in_process_server, []
    with srv.measuring:  # a measurement in progress
        client = threading.Thread(target=lambda: replies.append(
            request(srv.url + "/measure", "POST", measure_body({"a": onnx_model()}), token=None)))
        client.start()
        deadline = time.monotonic() + 60
        while srv.queue._value == MAX_QUEUED and time.monotonic() < deadline:  # until the request is queued
            time.sleep(0.01)
        assert srv.queue._value == MAX_QUEUED - 1
        assert client.is_alive() and not replies  # it waits for the lock
    client.join(60)
    assert replies and replies[0][0] == 200


def test_a_full_queue_is_503_and_the_client_says_busy(in_process_server):
    from nas.latency.device_server import MAX_QUEUED
    from nas.latency.remote import DeviceClient, DeviceError

    srv = in_process_server
    for _ in range(MAX_QUEUED):
        srv.queue.acquire()
    try:
        status, reply = request(srv.url + "/measure", "POST", measure_body({"a": onnx_model()}), token=None)
        assert status == 503 and "busy" in reply["error"]
        with pytest.raises(DeviceError, match="HTTP 503: busy"):
            DeviceClient(srv.url, retries=1, retry_delay=0.01).measure({"a": onnx_model()}, FAST)
    finally:
        for _ in range(MAX_QUEUED):
            srv.queue.release()
    assert DeviceClient(srv.url, retries=0).measure({"a": onnx_model()}, FAST)["a"].runs == 100


@pytest.mark.slow
def test_missing_widths_of_a_table_are_measured_on_the_server(tmp_path):
    """What NetAdapt and `nas run --device URL` do: units a table lacks go to the server."""
    from nas.latency import ensure_entries, load_predictor
    from nas.latency.catalog import find_table
    from nas.latency.keys import narrower_specs, unit_keys
    from nas.latency.remote import use_device
    from tests.latency_helpers import SHIPPED_FASHION, as_this_machines_table

    server = Server(tmp_path / "server.log")  # the default size limit: the reference network is a few MB
    with contextlib.closing(server), use_device(server.url):
        copy = as_this_machines_table(SHIPPED_FASHION, tmp_path / "tables")  # a table of the server's device
        table = find_table(tmp_path / "tables")  # "this" device is the server's within the block
        assert table == copy
        base = load_predictor(table)
        space_spec = load_space(ROOT / "search_spaces" / "fashion_mnist.yaml").baseline
        narrow = next(s for s in narrower_specs(space_spec) if any(k.id not in base.table for k in unit_keys(s)))
        before = _served(server)
        added = ensure_entries(table, [narrow], progress=False, overlay=tmp_path / "overlay")
    assert added >= 1 and _served(server) > before
    assert load_predictor(table, overlay=tmp_path / "overlay").predict(narrow) > 0
