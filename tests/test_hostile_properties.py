"""Property tests of the input boundary: the spec codec, the spec JSON reader, the space loader, the
experiment loader and the kernels-manifest reader take arbitrary text and bytes (and valid documents
with arbitrary values put in) and either return a valid object or raise NasError. Nothing else escapes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.errors import NasError
from nas.experiment import Experiment, experiment_from_dict, load_experiment
from nas.io import parse_yaml
from nas.latency.standalone_measure import ManifestError, check_manifest, read_results
from nas.spec import ArchSpec, SearchSpace, load_space, mobilenetv3_small
from nas.spec.arch import decode_spec
from nas.spec.space import SpaceError, space_from_dict

ROOT = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

SPACE = yaml.safe_load((ROOT / "search_spaces" / "fashion_mnist.yaml").read_text())
EXPERIMENT = yaml.safe_load((ROOT / "experiments" / "tiny_test.yaml").read_text())
SPEC = mobilenetv3_small(num_classes=10, resolution=32)
SPEC_STRING = SPEC.to_string()

# Values a hostile or careless file may hold: JSON/YAML scalars, huge and non-finite numbers, odd text.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**8, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["", "nan", "inf", "-1", "١٦", "relu,x", "../../etc/passwd", "0" * 50, "hswish"]),
)
values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)


def _paths(data, prefix=()):
    """Every (path of keys/indices) inside nested dicts and lists."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, prefix + (i,))


def _replaced(data, path, value):
    data = copy.deepcopy(data)
    if not path:
        return value
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def mutated(document):
    paths = list(_paths(document))
    return st.tuples(st.sampled_from(paths), values).map(lambda pv: _replaced(document, *pv))


def returns_or_nas_error(function, *args, expected=object, **kwargs):
    try:
        result = function(*args, **kwargs)
    except NasError:
        return None
    assert isinstance(result, expected)
    return result


# --- the spec codec and the spec JSON reader ----------------------------------------------------

@FAST
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_spec_string_arbitrary_text(text):
    returns_or_nas_error(decode_spec, text, expected=ArchSpec)


def _token_mutations():
    tokens = SPEC_STRING.split()
    pieces = st.one_of(st.text(alphabet="0123456789_.xcekdsrhinlmt١٦۳", max_size=12), st.text(max_size=12))
    return st.tuples(st.integers(0, len(tokens) - 1), pieces).map(
        lambda ip: " ".join(tokens[:ip[0]] + [ip[1]] + tokens[ip[0] + 1:]))


@FAST
@given(_token_mutations())
def test_spec_string_one_token_changed(text):
    spec = returns_or_nas_error(decode_spec, text, expected=ArchSpec)
    if spec is not None:
        assert decode_spec(spec.to_string()) == spec


@FAST
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), mutated(SPEC.to_dict()).map(json.dumps)))
def test_spec_json_arbitrary(text):
    try:
        text = text if isinstance(text, str) else text.decode("utf-8", "replace")
    except Exception:  # pragma: no cover
        return
    returns_or_nas_error(ArchSpec.from_json, text, expected=ArchSpec)


# --- spaces ---------------------------------------------------------------------------------------

@FAST
@given(mutated(SPACE))
def test_space_with_any_value_anywhere(data):
    returns_or_nas_error(space_from_dict, data, expected=SearchSpace)


@FAST
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_space_file_arbitrary_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    returns_or_nas_error(load_space, path, expected=SearchSpace)


@FAST
@given(st.text(alphabet="[]{}:-&*!|>'\"#, \nab01.", max_size=200))
def test_yaml_syntax_soup(text):
    returns_or_nas_error(parse_yaml, text, SpaceError, "soup")


# --- experiments ----------------------------------------------------------------------------------

@FAST
@given(mutated(EXPERIMENT))
def test_experiment_with_any_value_anywhere(data):
    returns_or_nas_error(experiment_from_dict, data, "exp.yaml", ROOT / "experiments", expected=Experiment)


@FAST
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_experiment_file_arbitrary_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("exp") / "exp.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    returns_or_nas_error(load_experiment, path, check_files=False, expected=Experiment)


# --- kernels manifests and results ----------------------------------------------------------------

MANIFEST = {
    "format": "nas-kernels/1",
    "protocol": {"version": "nas-latency-protocol/1", "threads": 1, "warmup": 10, "runs": 50, "passes": 4,
                 "max_iqr": 0.1, "remeasure": 2, "seed": 0, "group": 16, "statistic": "median", "reference_runs": 0},
    "units": [{"id": "stem:r32_i1_o16_k3_s2_hswish", "file": "graphs/stem__r32_i1_o16_k3_s2_hswish.onnx",
               "input_shape": [1, 1, 32, 32],
               "key": {"id": "stem:r32_i1_o16_k3_s2_hswish", "kind": "stem", "size": 32, "in_ch": 1, "out": 16,
                       "exp": 0, "kernel": 3, "stride": 2, "se": False, "act": "hswish", "residual": False,
                       "hidden": 0}}],
    "networks": [{"id": "overhead", "file": "graphs/overhead.onnx", "input_shape": [1, 1]}],
}


def manifest_reader(text):
    """What `nas lut import` and standalone_measure.py do with a manifest's text."""
    from nas.io import parse_json

    try:
        return check_manifest(parse_json(text, NasError, "manifest.json"))
    except ManifestError as exc:
        raise NasError(str(exc)) from None


@FAST
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), mutated(MANIFEST).map(json.dumps)))
def test_manifest_arbitrary(text):
    returns_or_nas_error(manifest_reader, text, expected=dict)


@FAST
@given(st.one_of(st.binary(max_size=300),
                 st.lists(st.text(alphabet="abc:_0123456789.,-e+nainf\r", max_size=30), max_size=5)
                 .map(lambda rows: ("id,median_ms,iqr_ms,runs\n" + "\n".join(rows) + "\n").encode())))
def test_results_csv_arbitrary(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("kernels") / "results.csv"
    path.write_bytes(content)
    try:
        rows = read_results(path)
    except ManifestError:
        return
    for row in rows.values():
        assert float(row["median_ms"]) > 0 and float(row["iqr_ms"]) >= 0 and int(row["runs"]) >= 1
    assert path.read_bytes() == content  # readers never write


@FAST
@given(mutated(MANIFEST))
def test_lut_import_of_any_manifest(tmp_path_factory, manifest):
    """`nas lut import` of a folder with a mutated manifest: a table or NasError, and never a
    half-made table folder left behind."""
    from nas.latency.transfer import import_results

    folder = tmp_path_factory.mktemp("kernels")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "device.json").write_text(json.dumps({"threads": 1, "cpu_model": "x", "runtime": "onnxruntime"}))
    (folder / "results.csv").write_text("id,median_ms,iqr_ms,runs\nstem:r32_i1_o16_k3_s2_hswish,0.1,0.01,200\n"
                                        "overhead,0.01,0.001,200\n")
    out = folder.parent / (folder.name + "-table")
    try:
        import_results(folder, out)
    except NasError:
        assert not out.exists()
        assert not [p for p in folder.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        return
    assert (out / "meta.json").exists()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml")))
def test_shipped_spaces_still_load(name):
    load_space(ROOT / "search_spaces" / name)
