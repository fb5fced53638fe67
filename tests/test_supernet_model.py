import random

import pytest
import torch

from nas.errors import NasError
from nas.spec import count_madds, load_space
from nas.supernet.model import Supernet, extract, largest_spec, smallest_spec
from tests.conftest import ROOT
from tests.supernet_helpers import write_super_space


@pytest.fixture
def space(tmp_path):
    return load_space(write_super_space(tmp_path))


def trained_statistics(net: Supernet, space, seed: int = 0) -> None:
    """Non-trivial weights and BN statistics: a few train-mode passes of random members with noisy weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
        net.train()
        rng = random.Random(seed)
        for _ in range(6):
            net.set_active(space.sample(rng))
            net(torch.randn(8, 1, 8, 8, generator=generator))
    net.eval()


def test_extracted_models_compute_what_the_supernet_computes(space):
    torch.manual_seed(0)
    net = Supernet(space)
    trained_statistics(net, space)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    specs = [space.baseline, largest_spec(space), smallest_spec(space), *(space.sample(s) for s in range(8))]
    for spec in specs:
        net.set_active(spec)
        with torch.no_grad():
            expected = net(x)
            got = extract(net, spec).eval()(x)
        assert torch.allclose(expected, got, atol=1e-5), spec.to_string()


def test_fashion_mnist_space_members_match_too():
    space = load_space(ROOT / "search_spaces" / "fashion_mnist.yaml")
    torch.manual_seed(0)
    net = Supernet(space)
    trained_statistics(net, space)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    for spec in (space.baseline, space.sample(3)):
        net.set_active(spec)
        with torch.no_grad():
            assert torch.allclose(net(x), extract(net, spec).eval()(x), atol=1e-5)


def test_a_3x3_candidate_gets_the_centre_of_the_7x7_kernel(space):
    net = Supernet(space)
    spec = smallest_spec(space)  # kernel 3 everywhere
    model = extract(net, spec)
    big = net.stages[0][0].depthwise.conv.weight
    assert big.shape[-1] == 7
    small = model.blocks[0].depthwise.conv.weight
    assert small.shape[-1] == 3
    assert torch.equal(small, big[: small.shape[0], :, 2:5, 2:5])


def test_a_spec_outside_the_space_is_refused(space):
    net = Supernet(space)
    wider = space.baseline.to_string().replace("e32_c16_s1_se_hs last_c32", "e32_c40_s1_se_hs last_c32")
    from nas.spec import ArchSpec

    with pytest.raises(NasError, match="not in space") as info:
        net.set_active(ArchSpec.from_string(wider))
    assert "\n" not in str(info.value)
    with pytest.raises(NasError, match="not in space"):
        extract(net, ArchSpec.from_string(wider))


def test_the_smallest_and_largest_members_take_the_extremes_of_every_choice():
    space = load_space(ROOT / "search_spaces" / "fashion_mnist.yaml")
    small, large = space.smallest_assignment(), space.largest_assignment()
    for i, st in enumerate(space.stages):
        assert (small[f"s{i}.depth"], large[f"s{i}.depth"]) == (min(st.depth), max(st.depth))
        assert (small[f"s{i}.b0.kernel"], large[f"s{i}.b0.kernel"]) == (min(st.kernel), max(st.kernel))
        assert small[f"s{i}.b0.se"] == min(st.se) and large[f"s{i}.b0.se"] == max(st.se)
        assert small[f"s{i}.b0.act"] == large[f"s{i}.b0.act"] == st.act[0]
    assert count_madds(space.decode(small)) < count_madds(space.decode(large))
