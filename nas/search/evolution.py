"""Regularized (aging) evolution (Real et al., 2019) over the space's decisions.

The first ``population`` trials are uniform samples. After that, each trial draws ``sample``
members of the population (the last ``population`` completed trials: the oldest dies first,
whatever its reward), takes the one with the highest reward as parent and changes exactly one
decision that matters (a block past its stage's depth does not), so the child is a new network.

The strategy keeps no state of its own: the population is read back from the study, and every
trial's random draws come from (seed, trial number), so a resumed search continues as it would have.
"""

from __future__ import annotations

from typing import Any

from nas.errors import NasError
from nas.search.base import Strategy, finished_records, trial_rng


def active_decisions(assignment: dict[str, Any], names: list[str]) -> list[str]:
    """Decisions that change the network: depths, widths and the blocks within each stage's depth."""
    out = []
    for name in names:
        parts = name.split(".")
        if len(parts) == 3:  # s{i}.b{j}.{key}
            stage, block = parts[0], int(parts[1][1:])
            if block >= assignment[f"{stage}.depth"]:
                continue
        out.append(name)
    return out


class EvolutionStrategy(Strategy):
    name = "evolution"
    OPTIONS = {"population": 10, "sample": 3}

    @classmethod
    def check_options(cls, options: dict) -> None:
        super().check_options(options)
        opts = {**cls.OPTIONS, **options}
        if not (isinstance(opts["population"], int) and isinstance(opts["sample"], int)
                and 1 <= opts["sample"] <= opts["population"]):
            raise NasError("evolution needs integers 1 <= sample <= population")

    def propose(self, number: int) -> dict[str, Any]:
        rng = trial_rng(self.seed, number, "evolution")
        done = [r for r in finished_records(self.study) if r.reward is not None and r.number < number]
        if len(done) < self.options["population"]:
            return self.space.sample_assignment(rng)
        population = done[-self.options["population"]:]
        parent = max(rng.sample(population, self.options["sample"]), key=lambda r: (r.reward, -r.number))
        return self.mutate(parent.assignment, rng)

    def mutate(self, assignment: dict[str, Any], rng) -> dict[str, Any]:
        """``assignment`` with one decision that matters changed to another of its choices."""
        choices = {d.name: d.choices for d in self.decisions}
        names = [n for n in active_decisions(assignment, list(choices)) if len(choices[n]) > 1]
        if not names:
            return dict(assignment)
        name = rng.choice(names)
        child = dict(assignment)
        child[name] = rng.choice([c for c in choices[name] if c != assignment[name]])
        return child
