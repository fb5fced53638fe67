"""Checkpoints: round trip, atomic writes, refusal of anything that is not plain weights."""

from __future__ import annotations

import pytest
import torch

from nas.errors import NasError
from nas.train import load_checkpoint, load_model, save_checkpoint
from nas.train.checkpoint import FORMAT


def tiny_spec(**io):
    from nas.spec import mobilenetv3_small

    return mobilenetv3_small(width_mult=0.25, **({"num_classes": 3, "resolution": 16, "in_channels": 1} | io))


def tiny_model(spec):
    from nas.models import build_model

    torch.manual_seed(0)
    return build_model(spec)


def test_round_trip(tmp_path):
    spec = tiny_spec()
    model = tiny_model(spec)
    path = save_checkpoint(tmp_path / "sub" / "ck.pt", spec, model, {"val_acc": 0.5, "path": tmp_path, "n": [1, 2]})
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]  # no temporary file left
    ck = load_checkpoint(path)
    assert ck.spec == spec and ck.metrics == {"val_acc": 0.5, "path": str(tmp_path), "n": [1, 2]}
    assert all(torch.equal(ck.state_dict[k], v) for k, v in model.state_dict().items())
    loaded_spec, loaded = load_model(path)
    assert loaded_spec.hash == spec.hash and not loaded.training
    model.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


class Payload:
    """Unpickling this would create a file: the stand-in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "spec_json": tiny_spec().to_json(), "state_dict": {}, "metrics": Payload(marker)}, path)
    with pytest.raises(NasError, match="refused: not a plain weights checkpoint"):
        load_checkpoint(path)
    with pytest.raises(NasError, match="refused"):
        load_model(path)
    assert not marker.exists()


def test_garbage_and_wrong_format(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(NasError, match="refused"):
        load_checkpoint(junk)
    with pytest.raises(NasError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(NasError, match="format"):
        load_checkpoint(plain)
    torch.save({"format": FORMAT, "spec_json": tiny_spec().to_json(), "metrics": {}}, plain)
    with pytest.raises(NasError, match="state_dict"):
        load_checkpoint(plain)
    torch.save({"format": FORMAT, "spec_json": "{bad json", "state_dict": {}, "metrics": {}}, plain)
    with pytest.raises(NasError, match="spec"):
        load_checkpoint(plain)


def test_state_dict_mismatch_names_key(tmp_path):
    spec = tiny_spec()
    other = tiny_model(tiny_spec(num_classes=7))
    path = save_checkpoint(tmp_path / "ck.pt", spec, other)  # weights of a 7-class head under a 3-class spec
    with pytest.raises(NasError, match=r"shape \(7"):
        load_model(path)
    state = tiny_model(spec).state_dict()
    state.pop(next(iter(state)))
    torch.save({"format": FORMAT, "spec_json": spec.to_json(), "state_dict": state, "metrics": {}}, path)
    with pytest.raises(NasError, match="missing key"):
        load_model(path)
