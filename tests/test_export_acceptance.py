"""Acceptance of issue 7: for 20 random samples of every shipped space and for every named network,
ONNX and TorchScript reproduce PyTorch within 1e-4 and the ONNX graph passes onnx.checker.

The registry drives the test: every ``search_spaces/*.yaml`` (``space_file`` fixture) and every
entry of ``NAMED_NETWORKS`` is covered automatically. Batch 2 and one thread keep it fast.
"""

from __future__ import annotations

import pytest
import torch

from nas.export import TOLERANCE, check_onnx, check_torchscript, export_onnx, export_torchscript
from nas.export.onnx import random_batch, torch_outputs
from nas.models import build_model
from nas.spec import NAMED_NETWORKS, load_space, named_spec

SAMPLES = 20
BATCH = 2


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def unit_scale_logits(model, spec, seed: int = 0):
    """Rescale the last Linear so the logits on the check batch have std 1 (fresh networks give
    logits so small that a 1e-4 absolute tolerance would prove nothing); returns the new logits."""
    x = random_batch(spec, BATCH, seed)
    std = float(torch_outputs(model, x).std())
    last = model.head[-1]
    with torch.no_grad():
        last.weight.div_(std)
        last.bias.div_(std)
    return torch_outputs(model, x)


def assert_exports_match(spec, model, tmp_path, name: str) -> None:
    model.eval()
    expected = unit_scale_logits(model, spec)
    assert 0.5 < expected.std() < 2.0  # the comparison below is on logits of size ~1
    onnx_path = export_onnx(model, spec, tmp_path / f"{name}.onnx")
    assert check_onnx(onnx_path, model, spec, batch=BATCH, expected=expected) <= TOLERANCE  # + onnx.checker
    ts_path = export_torchscript(model, spec, tmp_path / f"{name}.pt")
    assert check_torchscript(ts_path, model, spec, batch=BATCH, expected=expected) <= TOLERANCE
    onnx_path.unlink()
    ts_path.unlink()


def test_space_samples_export_exactly(space_file, tmp_path):
    space = load_space(space_file)
    for seed in range(SAMPLES):
        spec = space.sample(seed)
        assert_exports_match(spec, build_model(spec, seed=seed), tmp_path, f"sample{seed}")


@pytest.mark.parametrize("name", sorted(NAMED_NETWORKS))
def test_named_networks_export_exactly(name, tmp_path):
    spec = named_spec(name)
    assert_exports_match(spec, build_model(spec, seed=0), tmp_path, name)
