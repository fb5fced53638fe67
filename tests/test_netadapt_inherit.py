"""Weight inheritance: kept channels are the largest-L2 ones, bit-exact; own size is the identity."""

from __future__ import annotations

import pytest
import torch

from nas.errors import NasError
from nas.models import build_model
from nas.netadapt.inherit import channel_scores, channel_sets, inherit_state, kept_channels, shrink_model
from nas.netadapt.proposals import width_groups, with_width
from nas.spec import ArchSpec

torch.set_num_threads(1)

# residual group with SE and the last stage (b2-b3), a no-expand block (b0), SE squeezes that shrink
SPEC = ArchSpec.from_string(
    "in16x1 stem_c16_k3_s1_hs ir_k3_e16_c24_s2_se_re ir_k3_e72_c32_s2_re ir_k5_e96_c32_s1_se_hs "
    "ir_k3_e32_c32_s1_se_hs last_c48_hs head_c32_hs_d0.2 cls5")


def random_model(spec: ArchSpec, seed: int = 0) -> torch.nn.Module:
    """A model whose every tensor (BN statistics included) is random, so nothing is accidentally equal."""
    model = build_model(spec, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=gen) + 0.5 if key.endswith("running_var") \
                    else torch.randn(tensor.shape, generator=gen)
                tensor.copy_(values)
    return model.eval()


def group(spec: ArchSpec, name: str):
    return next(g for g in width_groups(spec) if g.name == name)


def test_own_size_is_the_identity():
    model = random_model(SPEC)
    state = model.state_dict()
    same = shrink_model(SPEC, model, SPEC).eval()
    for key, tensor in same.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    x = torch.randn(3, 1, 16, 16)
    assert torch.equal(same(x), model(x))


@pytest.mark.parametrize("name, width", [("width:b1-b3", 16), ("exp:b2", 48), ("width:stem", 8), ("exp:b1", 40)])
def test_kept_channels_are_bit_exact_and_the_largest(name, width):
    model = random_model(SPEC, seed=3)
    state = model.state_dict()
    new_spec = with_width(SPEC, group(SPEC, name), width)
    new_state = inherit_state(SPEC, state, new_spec)
    shapes = {k: v.shape for k, v in new_state.items()}
    kept = kept_channels(SPEC, state, shapes)
    sets = {c.name: c for c in channel_sets(SPEC)}
    index = kept[name]
    assert index.numel() == width and torch.all(index[1:] > index[:-1])
    # the kept channels have the largest summed squared L2 norm over every producer row of the group
    scores = channel_scores(sets[name], state)
    dropped = torch.tensor(sorted(set(range(scores.numel())) - set(index.tolist())))
    assert scores[index].min() >= scores[dropped].max()
    # every tensor carrying the group's channels keeps exactly those slices; everything else is copied
    expected = {key: tensor for key, tensor in state.items()}
    for cset in channel_sets(SPEC):
        for key, dim in cset.slots:
            expected[key] = expected[key].index_select(dim, kept[cset.name])
    for key, tensor in new_state.items():
        assert torch.equal(tensor, expected[key]), key
    # and the narrower network runs
    shrunk = shrink_model(SPEC, model, new_spec).eval()
    assert shrunk(torch.randn(2, 1, 16, 16)).shape == (2, 5)


def test_residual_group_uses_one_index_set_for_every_tensor():
    sets = {c.name: c for c in channel_sets(SPEC)}
    slots = dict(sets["width:b1-b3"].slots)
    # producer projection + both residual projections (+ their BN), the readers' inputs, the last stage
    for key in ("blocks.1.project.conv.weight", "blocks.2.project.bn.running_var", "blocks.3.project.conv.weight",
                "blocks.2.expand.conv.weight", "last.conv.conv.weight"):
        assert key in slots
    assert sets["width:b1-b3"].producers == ["blocks.1.project.conv.weight", "blocks.2.project.conv.weight",
                                             "blocks.3.project.conv.weight"]
    # block 3 has no expand conv: its depthwise, SE input/output and projection input are in the group
    for key, dim in (("blocks.3.depthwise.conv.weight", 0), ("blocks.3.se.fc1.weight", 1),
                     ("blocks.3.se.fc2.bias", 0), ("blocks.3.project.conv.weight", 1)):
        assert (key, dim) in sets["width:b1-b3"].slots


def test_dropping_dead_channels_keeps_the_function():
    """Channels whose producing filters and BN are zeroed contribute nothing: dropping them (they have the
    smallest L2 norm, so they are the ones dropped) leaves the network's outputs unchanged. In float64: the
    random network's outputs reach 10^5-10^6, where float32's different summation orders (96 channels against
    64) can differ by 10^2."""
    model = random_model(SPEC, seed=5).double()
    dead = torch.arange(0, 96, 3)  # 32 of block 2's 96 expansion channels
    with torch.no_grad():
        block = model.blocks[2]
        for conv_bn in (block.expand, block.depthwise):
            conv_bn.conv.weight[dead] = 0
            conv_bn.bn.weight[dead] = 0
            conv_bn.bn.bias[dead] = 0
    new_spec = with_width(SPEC, group(SPEC, "exp:b2"), 64)
    shrunk = shrink_model(SPEC, model, new_spec).double().eval()
    assert new_spec.blocks[2].se_channels == 16 < SPEC.blocks[2].se_channels  # the SE squeeze shrank too
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # the SE squeeze also lost 8 of its channels, so compare with those zeroed in the original as well
    se = model.blocks[2].se
    kept = kept_channels(SPEC, model.state_dict(), {k: v.shape for k, v in shrunk.state_dict().items()})["se:b2"]
    gone = torch.tensor(sorted(set(range(se.fc1.out_channels)) - set(kept.tolist())))
    with torch.no_grad():
        se.fc2.weight[:, gone] = 0
    torch.testing.assert_close(shrunk(x), model(x), rtol=1e-5, atol=1e-5)


def test_growing_or_changing_structure_is_refused():
    model = random_model(SPEC)
    wider = SPEC.replace(last=SPEC.last.__class__(out_channels=48, act="hswish", se=True))
    with pytest.raises(NasError, match="same layers"):
        inherit_state(SPEC, model.state_dict(), wider)
    grown = with_width(SPEC, group(SPEC, "exp:b2"), 104)
    with pytest.raises(NasError, match="grow"):
        inherit_state(SPEC, model.state_dict(), grown)
