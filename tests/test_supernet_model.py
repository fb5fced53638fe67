import random

import pytest
import torch

from nas.errors import NasError
from nas.spec import count_madds, load_space
from nas.supernet.model import Supernet, extract, largest_spec, reorder_channels, smallest_spec
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


def test_with_the_kernel_transform_extracted_models_compute_what_the_supernet_computes(space):
    torch.manual_seed(0)
    net = Supernet(space, kernel_transform=True)
    assert set(net.stages[0][0].kernel_maps) == {"7to5", "5to3"} and set(net.stages[1][0].kernel_maps) == {"7to3"}
    trained_statistics(net, space)  # the maps too: no longer the identity
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for spec in [space.baseline, largest_spec(space), smallest_spec(space), *(space.sample(s) for s in range(8))]:
        net.set_active(spec)
        with torch.no_grad():
            assert torch.allclose(net(x), extract(net, spec).eval()(x), atol=1e-5), spec.to_string()


def test_the_kernel_transform_maps_each_centre_in_turn(space):
    net = Supernet(space, kernel_transform=True)
    block = net.stages[0][0]
    big = block.depthwise.conv.weight[:4]
    with torch.no_grad():
        assert torch.equal(block.depthwise_weight(4, 3), big[:, :, 2:5, 2:5])  # identity maps: the centre crop
        for name in ("7to5", "5to3"):
            block.kernel_maps[name].copy_(torch.randn(block.kernel_maps[name].shape))
        five = (big[:, :, 1:6, 1:6].reshape(4, 25) @ block.kernel_maps["7to5"].T).reshape(4, 1, 5, 5)
        three = (five[:, :, 1:4, 1:4].reshape(4, 9) @ block.kernel_maps["5to3"].T).reshape(4, 1, 3, 3)
        assert torch.allclose(block.depthwise_weight(4, 5), five, atol=1e-6)
        assert torch.allclose(block.depthwise_weight(4, 3), three, atol=1e-6)
        assert torch.equal(block.depthwise_weight(4, 7), big)
    assert not Supernet(space).stages[0][0].kernel_maps  # the plain centre crop has no maps


def test_reordering_keeps_the_largest_member_and_puts_important_channels_first(space):
    torch.manual_seed(0)
    net = Supernet(space)
    trained_statistics(net, space)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    narrow = smallest_spec(space)  # stage 1's first 32 of 96 hidden channels
    before = {}
    with torch.no_grad():
        for spec in (largest_spec(space), narrow):
            net.set_active(spec)
            before[spec.hash] = net(x)
    stage0 = {k: v.clone() for k, v in net.stages[0].state_dict().items()}
    assert reorder_channels(net) == len(net.stages[1])  # the ratio-1 stage 0 is left as it is
    assert reorder_channels(net) == 0  # sorted already
    with torch.no_grad():
        net.set_active(largest_spec(space))
        assert torch.allclose(net(x), before[largest_spec(space).hash], atol=1e-5)
        net.set_active(narrow)
        assert not torch.allclose(net(x), before[narrow.hash], atol=1e-3)
    for block in net.stages[1]:
        importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:-1] >= importance[1:])
    assert all(torch.equal(v, net.stages[0].state_dict()[k]) for k, v in stage0.items())


def test_reordering_permutes_the_optimizer_state_with_the_weights(space):
    torch.manual_seed(0)
    net = Supernet(space)
    trained_statistics(net, space)
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 1, 8, 8)).sum().backward()
    optimizer.step()
    block = net.stages[1][0]
    weight = block.project.conv.weight
    order = torch.argsort(weight.abs().sum(dim=(0, 2, 3)), descending=True, stable=True)
    momentum = optimizer.state[weight]["momentum_buffer"].clone()
    reorder_channels(net, optimizer)
    assert torch.equal(optimizer.state[weight]["momentum_buffer"], momentum.index_select(1, order))


@pytest.mark.parametrize("kernel_transform", [False, True])
def test_the_batched_depthwise_gradient_gives_the_supernet_the_same_gradients(space, monkeypatch, kernel_transform):
    """On CPUs without AVX-512 the supernet's large kernels on small maps take the batched weight gradient
    (nas.train.depthwise): the same gradients as aten's, to float rounding."""
    import nas.supernet.model as model_mod
    from nas.train import depthwise

    torch.manual_seed(0)
    net = Supernet(space, kernel_transform=kernel_transform).double()
    net.set_active(largest_spec(space))
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads, calls = {}, {False: [], True: []}
    original = depthwise.DepthwiseConv.apply
    for small_maps in (False, True):
        monkeypatch.setattr(depthwise.DepthwiseConv, "apply",
                            lambda *a, seen=calls[small_maps]: seen.append(a[-1]) or original(*a))
        monkeypatch.setattr(model_mod, "small_map_depthwise", lambda: small_maps)
        net.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        net(x).square().sum().backward()
        grads[small_maps] = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    assert calls[False] == [] and calls[True] and set(calls[True]) == {depthwise.BATCHED}  # only with small_maps
    for got, want in zip(grads[True], grads[False]):
        torch.testing.assert_close(got, want)
