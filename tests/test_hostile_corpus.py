"""Regression corpus of hostile inputs (issue 22): each case ends in one line on stderr and exit
status 2, memory stays bounded while refusing, no secret is echoed, nothing outside the output folder
changes and no table or results file is left unreadable or half-made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, assert_one_line_error, load_benchmark, run_cli, run_main
from nas.errors import NasError
from nas.io import check_output_dir, write_json_atomic, write_text_atomic
from nas.redact import forget, redact, scrub
from nas.spec import ArchSpec, SpaceError, load_space, mobilenetv3_small
from nas.spec.arch import SpecError

SPACE = yaml.safe_load((ROOT / "search_spaces" / "fashion_mnist.yaml").read_text())
SPEC = mobilenetv3_small(num_classes=10, resolution=28, in_channels=1)
TWO_GB_KB = 2 * 1024 * 1024  # peak_rss_kib() is in KiB

# Runs the CLI in a fresh process and prints its peak memory (KiB) as the last stdout line: the
# benchmark's snippet, so that the test measures what the README's figure measures.
MEASURED_MAIN = load_benchmark("hostile_inputs").MEASURED_MAIN


def run_measured(*args) -> tuple[subprocess.CompletedProcess, int]:
    result = subprocess.run([sys.executable, "-c", MEASURED_MAIN, *map(str, args)], capture_output=True, text=True,
                            timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return result, int(result.stdout.strip().splitlines()[-1])


def test_a_child_reports_its_own_peak_memory_not_its_parents():
    ballast = b"\x01" * (600 * 1024 * 1024)  # 600 MiB resident in this process
    code = "from nas.process import peak_rss_kib; print(peak_rss_kib())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    del ballast
    assert 0 < int(out) < 300 * 1024


def write_space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def billion_laughs(levels: int = 12) -> str:
    lines = ['lol0: &lol0 "lol"']
    for i in range(1, levels):
        refs = ", ".join([f"*lol{i - 1}"] * 10)
        lines.append(f"lol{i}: &lol{i} [{refs}]")
    return "\n".join(lines)


# --- YAML and JSON: aliases, depth, size --------------------------------------------------------

def test_billion_laughs_in_space_description_is_refused_fast_and_small(tmp_path):
    text = yaml.safe_dump(SPACE, sort_keys=False)
    laughs = billion_laughs().replace("\n", "\n  ")
    path = write_space(tmp_path, text + "description:\n  " + laughs + "\n")
    result, peak_kib = run_measured("arch", "show", path)
    assert_one_line_error(result, "anchors (&name) are not allowed")
    assert peak_kib < TWO_GB_KB


def test_aliases_refused_anywhere(tmp_path):
    text = yaml.safe_dump(SPACE, sort_keys=False).replace("name: fashion_mnist", "name: &n fashion_mnist", 1)
    with pytest.raises(SpaceError, match="anchors"):
        load_space(write_space(tmp_path, text))


@pytest.mark.parametrize("text", ["[" * 100_000, "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 200)),
                                  "{a: " * 5000])
def test_deep_yaml_is_one_line(tmp_path, text):
    with pytest.raises(SpaceError, match="nested deeper|not valid YAML"):
        load_space(write_space(tmp_path, text))


def test_deep_json_spec_is_one_line(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert_one_line_error(run_cli("arch", "show", path), "nested too deeply")
    path.write_text('{"a":' * 40 + "1" + "}" * 40)
    with pytest.raises(SpecError, match="nested deeper"):
        ArchSpec.from_json(path.read_text())


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_json_non_finite_numbers_refused(constant):
    text = SPEC.to_json().replace('"dropout": 0.2', f'"dropout": {constant}')
    with pytest.raises(SpecError, match="malformed JSON"):
        ArchSpec.from_json(text)


def test_oversized_space_file_refused_before_reading(tmp_path):
    path = write_space(tmp_path, "# " + "x" * (2 << 20))
    with pytest.raises(SpaceError, match="more than the limit"):
        load_space(path)


# --- numbers: finite, ASCII, bounded by memory ---------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["arch", "show", "mobilenetv3-small", "--width-mult", "nan"], "expected a finite number"),
    (["arch", "show", "mobilenetv3-small", "--width-mult", "inf"], "expected a finite number"),
    (["arch", "show", "mobilenetv3-small", "--width-mult", "1e999"], "must be > 0"),
    (["arch", "show", "mobilenetv3-small", "--resolution", "١٦"], "ASCII digits"),
    (["train", "mobilenetv3-small", "--epochs", "inf"], "expected a finite number"),
    (["train", "mobilenetv3-small", "--epochs", "nan"], "expected a finite number"),
    (["train", "mobilenetv3-small", "--steps", "1", "--lr", "-1"], "must be > 0"),
    (["latency", "measure", "mobilenetv3-small", "--threads", "100000"], "must be between 1 and 4,096"),
    (["latency", "measure", "mobilenetv3-small", "--threads", "4096"], "cores (add --force-threads"),
    (["lut", "build", "--space", "search_spaces/fashion_mnist.yaml", "--threads", "100000", "--out", "/tmp/x"],
     "must be between 1 and 4,096"),
])
def test_bad_numbers_are_one_line(args, fragment, capsys):
    assert_one_line_error(run_main(capsys, *args), fragment)  # a fresh process: tests/test_hostile_cli.py


def test_threads_above_cores_need_force():
    cores = os.cpu_count() or 1
    from nas.cli import build_parser
    from nas.cli.args import check_threads

    args = build_parser().parse_args(["latency", "measure", "x", "--threads", str(cores + 1)])
    with pytest.raises(NasError, match="--force-threads"):
        check_threads(args)
    args = build_parser().parse_args(["latency", "measure", "x", "--threads", str(cores + 1), "--force-threads"])
    check_threads(args)


def test_arabic_indic_digits_in_spec_string_refused():
    text = SPEC.to_string().replace("cls10", "cls١٦")
    with pytest.raises(SpecError):
        ArchSpec.from_string(text)
    text = SPEC.to_string().replace("_k3_", "_k٣_", 1)
    with pytest.raises(SpecError, match="ASCII"):
        ArchSpec.from_string(text)


@pytest.mark.slow
@pytest.mark.parametrize("change", [
    ("stem_c16", "stem_c1000000000"),   # 10^9: more than 9 digits
    ("stem_c16", "stem_c999999999"),    # more than the channel limit
    ("last_c576", "last_c60000"),       # within the channel limit, beyond the memory bound (head 60000 x 1024)
])
def test_huge_width_in_spec_is_one_line_small_memory(change):
    text = SPEC.to_string().replace(*change, 1)
    for command in (["latency", "measure", text], ["train", text, "--steps", "1", "--subset", "64"]):
        result, peak_kib = run_measured(*command)
        assert_one_line_error(result)
        assert peak_kib < TWO_GB_KB


def test_memory_bound_is_stated_in_the_message():
    text = SPEC.to_string().replace("last_c576", "last_c60000", 1).replace("head_c1024", "head_c60000", 1)
    with pytest.raises(SpecError, match=r"GiB \(fp32\), more than the limit of 1 GiB"):
        ArchSpec.from_string(text)


def test_huge_width_in_space_is_one_line_small_memory(tmp_path):
    data = json.loads(json.dumps(SPACE))
    data["stages"][-1]["width"] = [16, 10**9]
    path = write_space(tmp_path, yaml.safe_dump(data))
    result, peak_kib = run_measured("arch", "sample", path, "--seed", "0")
    assert_one_line_error(result, "must be <= 65,536")
    assert peak_kib < TWO_GB_KB
    data["stages"][-1]["width"] = [16, 10000]  # within the channel limit, beyond the memory bound
    with pytest.raises(SpaceError, match="network too large"):
        load_space(write_space(tmp_path, yaml.safe_dump(data)))


# --- secrets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, secret, shown", [
    ("postgresql://nas:secret@db:5432/x", "secret", "postgresql://nas:***@db:5432/x"),
    ("postgresql://user:pa@ss@host/db", "pa@ss", "postgresql://user:***@host/db"),
    ("postgresql://user:p%40ss@host/db", "p%40ss", "postgresql://user:***@host/db"),
    ("postgresql://user@host/db?password=hunter2&sslmode=require", "hunter2",
     "postgresql://user@host/db?password=***&sslmode=require"),
    ("postgresql://host/db?sslmode=require&PASSWORD=hunter2", "hunter2", "postgresql://host/db?sslmode=require&PASSWORD=***"),
    ("sqlite:////tmp/a@b.db", None, "sqlite:////tmp/a@b.db"),
])
def test_redact_forms(url, secret, shown):
    assert redact(url) == shown
    if secret:
        assert secret not in redact(url)


def test_driver_message_echoing_part_of_the_password_is_scrubbed():
    forget()
    url = "postgresql://user:pa@ss@dbhost:5432/db"
    message = f"cannot open storage {redact(url)}: could not translate host name \"ss@dbhost\" to address"
    assert "ss@dbhost" not in scrub(message)
    assert "pa@ss" not in scrub(f"connection to {url} failed")
    assert "hunter2" not in scrub("error: postgresql://u@h/db?password=hunter2 refused")


@pytest.mark.slow
@pytest.mark.parametrize("url", ["postgresql://nas:pa@ss@127.0.0.1:1/db",
                                 "postgresql://nas@127.0.0.1:1/db?password=hunter2secret"])
def test_no_secret_on_stderr(tmp_path, url, tiny_test_experiment):
    exp = tiny_test_experiment  # its table folder holds this machine's table: nothing is built
    result = run_cli("search", exp, "--storage", url, "--evaluator", "synthetic", "--trials", "1", "--no-measure",
                     "--out", tmp_path / "run")
    assert result.returncode == 2, result.stderr
    for secret in ("pa@ss", "ss@127", "hunter2secret"):
        assert secret not in result.stderr and secret not in result.stdout
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert "hunter2secret" not in path.read_text(errors="replace") and "pa@ss" not in path.read_text(
                errors="replace")


# --- outputs -------------------------------------------------------------------------------------

def test_symlink_in_output_folder_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "spec.json").symlink_to(victim)
    assert_one_line_error(run_cli("export", "mobilenetv3-small", "--format", "json", "--out", out), "symlink")
    assert_one_line_error(run_cli("train", SPEC.to_string(), "--steps", "1", "--out", out), "symlink")
    assert victim.read_text() == "keep me\n"
    # the writer itself replaces a link at its target name, never writes through it
    write_text_atomic(out / "spec.json", "new\n")
    assert victim.read_text() == "keep me\n" and not (out / "spec.json").is_symlink()


def test_output_folder_that_is_a_file_fails_before_training(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    result = run_cli("train", SPEC.to_string(), "--epochs", "100", "--out", file, timeout=60)
    assert_one_line_error(result, "not a folder")
    with pytest.raises(NasError, match="not a folder"):
        check_output_dir(file / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_fails_before_work(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert_one_line_error(run_cli("train", SPEC.to_string(), "--epochs", "100", "--out", folder), "not writable")
    finally:
        folder.chmod(0o700)


def test_json_outputs_refuse_infinity(tmp_path):
    with pytest.raises(NasError, match="cannot write"):
        write_json_atomic(tmp_path / "x.json", {"median_ms": float("inf")})
    assert not (tmp_path / "x.json").exists()
    assert not list(tmp_path.iterdir())


# --- kernels folders and tables ------------------------------------------------------------------

def kernels_folder(folder: Path, act: str = "hswish", threads: int = 1) -> Path:
    """A measured kernels folder with one stem unit and the overhead graph (no ONNX needed to import)."""
    unit_id = f"stem:r28_i1_o16_k3_s2_{act}"
    manifest = {
        "format": "nas-kernels/1",
        "protocol": {"version": "nas-latency-protocol/1", "threads": threads, "warmup": 10, "runs": 50, "passes": 4,
                     "max_iqr": 0.1, "remeasure": 2, "seed": 0, "group": 16, "statistic": "median",
                     "reference_runs": 0},
        "units": [{"id": unit_id, "file": "graphs/stem.onnx", "input_shape": [1, 1, 28, 28],
                   "key": {"id": unit_id, "kind": "stem", "size": 28, "in_ch": 1, "out": 16, "exp": 0, "kernel": 3,
                           "stride": 2, "se": False, "act": act, "residual": False, "hidden": 0}}],
        "networks": [{"id": "overhead", "file": "graphs/overhead.onnx", "input_shape": [1, 1]}],
    }
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "device.json").write_text(json.dumps({"threads": threads, "cpu_model": "test", "runtime": "onnxruntime"}))
    (folder / "results.csv").write_text(f"id,median_ms,iqr_ms,runs\n{unit_id},0.1,0.01,200\noverhead,0.01,0.001,200\n")
    return folder


def test_lut_import_refuses_act_with_comma_and_the_retry_works(tmp_path):
    from nas.latency import load_table

    kernels = kernels_folder(tmp_path / "kernels", act="hswish,evil")
    out = tmp_path / "table"
    assert_one_line_error(run_cli("lut", "import", kernels, "--out", out))
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["kernels"]
    kernels_folder(tmp_path / "kernels")
    result = run_cli("lut", "import", kernels, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    assert len(load_table(out)) == 1


@pytest.mark.parametrize("change", [
    lambda m: m.update(units="x"),
    lambda m: m["units"][0].update(file="../../etc/passwd"),
    lambda m: m["units"][0]["key"].update(out=10**12),
    lambda m: m["units"][0]["key"].update(se="yes"),
    lambda m: m["protocol"].update(threads=-1),
    lambda m: m.pop("protocol"),
    lambda m: m["units"].append(dict(m["units"][0])),
])
def test_malformed_manifest_is_one_line_and_leaves_nothing(tmp_path, change):
    kernels = kernels_folder(tmp_path / "kernels")
    manifest = json.loads((kernels / "manifest.json").read_text())
    change(manifest)
    (kernels / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_cli("lut", "import", kernels, "--out", tmp_path / "table"))
    assert [p.name for p in tmp_path.iterdir()] == ["kernels"]


@pytest.mark.parametrize("results", [
    "id,median_ms,iqr_ms,runs\nstem:r28_i1_o16_k3_s2_hswish,0.1,0.01,200,extra\n",
    "id,median_ms,iqr_ms,runs\nstem:r28_i1_o16_k3_s2_hswish,inf,0.01,200\n",
    "id,median_ms,iqr_ms,runs\nstem:r28_i1_o16_k3_s2_hswish,nan,0.01,200\n",
    "id,median_ms,iqr_ms,runs\nstem:r28_i1_o16_k3_s2_hswish,0.1,0.01,٢٠٠\n",
    "median_ms,id,iqr_ms,runs\n",
])
def test_malformed_results_are_one_line(tmp_path, results):
    kernels = kernels_folder(tmp_path / "kernels")
    (kernels / "results.csv").write_text(results)
    assert_one_line_error(run_cli("lut", "import", kernels, "--out", tmp_path / "table"))
    assert not (tmp_path / "table").exists()


def test_standalone_rerun_with_other_threads_is_refused(tmp_path):
    from nas.latency.standalone_measure import SETTINGS, ManifestError, main, measure_manifest, read_results

    kernels = kernels_folder(tmp_path / "kernels")
    with pytest.raises(ManifestError, match="measured with 1 thread"):
        measure_manifest(kernels, threads=2)  # rows from before the settings file: the manifest's protocol
    (kernels / SETTINGS).write_text(json.dumps({"protocol": {"version": "nas-latency-protocol/1", "threads": 2,
                                                             "warmup": 10, "runs": 50, "passes": 4, "max_iqr": 0.1,
                                                             "remeasure": 2, "seed": 0, "group": 16,
                                                             "statistic": "median", "reference_runs": 0}}))
    with pytest.raises(ManifestError, match="--threads 2 to resume"):
        measure_manifest(kernels, threads=1)
    before = (kernels / "results.csv").read_bytes()
    with pytest.raises(SystemExit) as exit_:
        main([str(kernels), "--threads", "100000"])
    assert exit_.value.code == 2
    assert (kernels / "results.csv").read_bytes() == before and len(read_results(kernels / "results.csv")) == 2


def test_readers_never_rewrite_a_torn_results_file(tmp_path):
    from nas.latency.standalone_measure import read_results

    kernels = kernels_folder(tmp_path / "kernels")
    torn = (kernels / "results.csv").read_bytes() + b"stem:r28_i1_o16_k3_s2_re,0.0"
    (kernels / "results.csv").write_bytes(torn)
    assert len(read_results(kernels / "results.csv")) == 2
    assert (kernels / "results.csv").read_bytes() == torn


def test_export_kernels_into_a_measured_folder_is_refused(tmp_path):
    from nas.latency.transfer import export_for_device

    kernels = kernels_folder(tmp_path / "kernels")
    with pytest.raises(NasError, match="already holds measurements"):
        export_for_device(kernels, load_space(ROOT / "search_spaces" / "fashion_mnist.yaml"))


# --- the CLI's last line of defence --------------------------------------------------------------

def test_unexpected_exception_is_one_line_exit_3(monkeypatch, capsys):
    import nas.cli.arch
    from nas.cli import main

    def broken(args):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(nas.cli.arch, "cmd_show", broken)
    assert main(["arch", "show", "x"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: ValueError: boom" in err[0] and "--debug" in err[0]
    assert main(["arch", "show", "x", "--debug"]) == 3
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("exc", [RecursionError("deep"), MemoryError()])
def test_recursion_and_memory_errors_are_one_line_exit_2(monkeypatch, capsys, exc):
    import nas.cli.arch
    from nas.cli import main

    def hostile(args):
        raise exc

    monkeypatch.setattr(nas.cli.arch, "cmd_show", hostile)
    assert main(["arch", "show", "x"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
