"""NetAdapt proposals on specs: width groups, structure rules, smallest cuts (pure, no torch)."""

from __future__ import annotations

import pytest

from nas.netadapt.proposals import (Group, candidate_widths, make_proposals, smallest_reachable, width_groups,
                                    with_width)
from nas.spec import ArchSpec, count_madds, load_space, named_spec

ROOT_SPACE = "search_spaces/fashion_mnist.yaml"


class MaddsLatency:
    """A fake predictor: latency proportional to multiply-adds (1 ms per million)."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, spec: ArchSpec) -> float:
        self.calls += 1
        return count_madds(spec) / 1e6


@pytest.fixture(scope="module")
def baseline() -> ArchSpec:
    from pathlib import Path

    return load_space(Path(__file__).resolve().parents[1] / ROOT_SPACE).baseline


def residual_chains(spec: ArchSpec) -> list[list[int]]:
    """Indices of blocks tied together by residual adds (producer first)."""
    chains, current = [], []
    for i, block in enumerate(spec.blocks):
        if block.residual:
            current.append(i)
        else:
            if current:
                chains.append(current)
            current = [i]
    chains.append(current)
    return chains


def assert_consistent(old: ArchSpec, new: ArchSpec) -> None:
    """Same structure; residual chains share one width; blocks without expand keep exp == in."""
    assert [(b.has_expand, b.residual) for b in old.blocks] == [(b.has_expand, b.residual) for b in new.blocks]
    for chain in residual_chains(new):
        widths = {new.blocks[chain[0]].out_channels} | {new.blocks[j].in_channels for j in chain[1:]} \
            | {new.blocks[j].out_channels for j in chain[1:]}
        assert len(widths) == 1, (chain, new.to_string())
    for b in new.blocks:
        assert min(b.in_channels, b.exp_channels, b.out_channels) >= 8
    ArchSpec.from_json(new.to_json())  # still a valid spec


def test_groups_of_the_fashion_mnist_baseline(baseline):
    names = [g.name for g in width_groups(baseline)]
    assert names[:6] == ["width:stem", "width:b0", "width:b1-b2", "width:b3-b5", "width:b6-b7", "width:b8-b10"]
    assert names[6:] == [f"exp:b{i}" for i in range(1, 11)]  # block 0 has exp == in: no expand group


def test_residual_group_shrinks_together_with_the_next_input_and_last_stage(baseline):
    group = next(g for g in width_groups(baseline) if g.name == "width:b8-b10")
    new = with_width(baseline, group, 64)
    assert [b.out_channels for b in new.blocks[8:]] == [64, 64, 64]
    assert [b.in_channels for b in new.blocks[9:]] == [64, 64]
    assert new.feature_channels == 64 and new.blocks[8].in_channels == 48
    assert [b.exp_channels for b in new.blocks] == [b.exp_channels for b in baseline.blocks]
    assert_consistent(baseline, new)


def test_block_without_expand_follows_its_input_width(baseline):
    stem_group = width_groups(baseline)[0]
    new = with_width(baseline, stem_group, 8)
    assert new.stem.out_channels == 8
    b0 = new.blocks[0]
    assert (b0.in_channels, b0.exp_channels, b0.out_channels) == (8, 8, 16)
    assert not b0.has_expand and b0.se_channels == 8


def test_mobilenetv3_large_first_block_is_tied_to_the_stem():
    spec = named_spec("mobilenetv3-large")
    group = width_groups(spec)[0]
    assert group == Group("bottleneck", -1, (0,))
    new = with_width(spec, group, 8)
    assert new.stem.out_channels == 8
    assert (new.blocks[0].in_channels, new.blocks[0].exp_channels, new.blocks[0].out_channels) == (8, 8, 8)
    assert new.blocks[1].in_channels == 8 and new.blocks[1].exp_channels == 64
    assert_consistent(spec, new)


def test_widths_that_would_change_the_structure_are_skipped(baseline):
    groups = {g.name: g for g in width_groups(baseline)}
    # block 3 is 24 -> 40 with stride 1: at 24 output channels it would gain a residual add
    assert candidate_widths(baseline, groups["width:b3-b5"]) == [32, 16, 8]
    assert with_width(baseline, groups["width:b3-b5"], 24) is None
    # block 1 (in 16): an expansion width of 16 would drop its expand conv
    assert 16 not in candidate_widths(baseline, groups["exp:b1"])
    assert with_width(baseline, groups["exp:b1"], 16) is None
    assert with_width(baseline, groups["exp:b1"], 0) is None


@pytest.mark.parametrize("fraction", [0.01, 0.03])
def test_every_proposal_saves_delta_with_the_smallest_cut(baseline, fraction):
    predictor = MaddsLatency()
    start = predictor.predict(baseline)
    delta = fraction * start
    proposals = make_proposals(baseline, predictor, delta)
    assert proposals
    covered = set()
    for p in proposals:
        covered.add(p.name)
        assert p.saving_ms >= delta
        assert p.saving_ms == pytest.approx(start - predictor.predict(p.spec))
        assert p.channels_removed == p.old_width - p.new_width > 0 and p.channels_removed % 8 == 0
        assert_consistent(baseline, p.spec)
        # minimal: every smaller valid cut of the same group saves less than delta
        for width in candidate_widths(baseline, p.group):
            if width <= p.new_width:
                break
            assert start - predictor.predict(with_width(baseline, p.group, width)) < delta
    # a group without a proposal cannot reach delta at all
    for group in width_groups(baseline):
        if group.name not in covered:
            assert all(start - predictor.predict(with_width(baseline, group, w)) < delta
                       for w in candidate_widths(baseline, group))


def test_a_larger_delta_needs_larger_cuts(baseline):
    predictor = MaddsLatency()
    start = predictor.predict(baseline)
    small = {p.name: p.channels_removed for p in make_proposals(baseline, predictor, 0.01 * start)}
    large = {p.name: p.channels_removed for p in make_proposals(baseline, predictor, 0.05 * start)}
    assert set(large) <= set(small)
    assert all(large[name] >= small[name] for name in large)
    assert any(large[name] > small[name] for name in large)


def test_smallest_reachable_network_cannot_shrink_further(baseline):
    small = smallest_reachable(baseline)
    assert_consistent(baseline, small)
    assert all(candidate_widths(small, g) == [] for g in width_groups(small))
    assert small.stem.out_channels == 8 and small.feature_channels == 8
    assert count_madds(small) < count_madds(baseline) / 5


def test_delta_must_be_positive(baseline):
    with pytest.raises(ValueError):
        make_proposals(baseline, MaddsLatency(), 0.0)
