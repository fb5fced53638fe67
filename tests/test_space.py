"""Search spaces: loading, validation, size, deterministic sampling, membership of the baselines."""

import random

import pytest
import yaml

from nas.spec import SpaceError, load_space, mobilenetv3_large, mobilenetv3_small
from nas.spec.space import space_from_dict

ROOT_SPACES = "search_spaces"


def test_paper_networks_are_members_and_baselines():
    large = load_space(f"{ROOT_SPACES}/mobilenetv3_large.yaml")
    small = load_space(f"{ROOT_SPACES}/mobilenetv3_small.yaml")
    assert large.baseline == mobilenetv3_large()
    assert small.baseline == mobilenetv3_small()
    assert large.decode(large.encode(mobilenetv3_large())) == mobilenetv3_large()
    assert not small.contains(mobilenetv3_large())


def test_fashion_space_baseline_is_small_like():
    space = load_space(f"{ROOT_SPACES}/fashion_mnist.yaml")
    base = space.baseline
    assert (base.resolution, base.in_channels, base.num_classes) == (28, 1, 10)
    small = mobilenetv3_small(num_classes=10)
    strip = lambda s: [(b.kernel, b.exp_channels, b.out_channels, b.se, b.act) for b in s.blocks]  # noqa: E731
    assert strip(base) == strip(small)       # same blocks, only the stride plan differs
    assert base.final_size == 4


def test_sampling_is_deterministic_and_valid(space_file):
    space = load_space(space_file)
    a = [space.sample(random.Random(7)).hash for _ in range(3)]
    assert len(set(a)) == 1
    assert space.sample(7) == space.sample(7)
    assert space.sample(7) != space.sample(8)
    for seed in range(100):
        spec = space.sample(seed)
        assert space.decode(space.encode(spec)) == spec


def test_size_counts_decision_combinations():
    data = {
        "name": "tiny", "input": {"resolution": 16, "channels": 1}, "num_classes": 3,
        "stem": {"out_channels": 8, "kernel": 3, "stride": 1, "act": "relu"},
        "stages": [{"stride": 2, "depth": [1, 2], "width": [8, 16], "kernel": [3, 5], "expansion": [1, 2],
                    "se": [False], "act": ["relu"]}],
        "last_stage": {"out_channels": 32}, "head": {"hidden": 0},
    }
    space = space_from_dict(data)
    # widths 2 x (4 choices for depth 1 + 4^2 for depth 2)
    assert space.size == 2 * (4 + 16)
    specs = {space.decode(dict(zip([d.name for d in space.decisions], values))).hash
             for values in _product(space.decisions)}
    assert len(specs) == space.size


def _product(decisions):
    import itertools

    return itertools.product(*(d.choices for d in decisions))


def _space_yaml(tmp_path, mutate):
    data = yaml.safe_load(open(f"{ROOT_SPACES}/fashion_mnist.yaml"))
    mutate(data)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d["stages"][0].update(kernel=[]), "stages[0].kernel: empty choice list"),
    (lambda d: d["stages"][1].update(colour=[1]), "stages[1]: unknown key 'colour'"),
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d["stages"][0].update(kernel=[3, 4]), "stages[0].kernel: 4 is not one of 3, 5, 7"),
    (lambda d: d["stages"][0].update(act=["gelu"]), "stages[0].act: 'gelu' is not one of"),
    (lambda d: d["stages"][0].update(stride=3), "stages[0].stride: 3 is not one of 1, 2"),
    (lambda d: d["stages"][0].update(width=[0]), "stages[0].width: choices must be >= 1"),
    (lambda d: d.update(stages=[]), "stages: empty choice list"),
    (lambda d: d["stem"].update(act="tanh"), "stem.act: 'tanh' is not one of"),
    (lambda d: d.update(baseline=d["baseline"].replace("ir_k3_e16", "ir_k7_e16")), "baseline is not a member"),
])
def test_bad_spaces_are_refused(tmp_path, mutate, fragment):
    with pytest.raises(SpaceError) as err:
        load_space(_space_yaml(tmp_path, mutate))
    assert fragment in str(err.value)


def test_missing_space_file():
    with pytest.raises(SpaceError, match="space file not found"):
        load_space("nope.yaml")


def test_space_hash_ignores_name_but_not_choices(tmp_path):
    base = load_space(f"{ROOT_SPACES}/fashion_mnist.yaml")
    renamed = load_space(_space_yaml(tmp_path, lambda d: d.update(name="other")))
    assert renamed.hash == base.hash
    changed = load_space(_space_yaml(tmp_path, lambda d: d["stages"][0].update(kernel=[3])))
    assert changed.hash != base.hash
