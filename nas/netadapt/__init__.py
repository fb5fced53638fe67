"""NetAdapt: shrink a trained network's channel widths to a latency target using the lookup tables.

``proposals`` (pure data: width groups, shrunk specs, minimal cuts), ``inherit`` (keep the
largest-L2 channels' weights), ``loop`` (iterations, fine-tuning, selection, resume, history) and
``plots`` (the accuracy-latency trajectory).
"""

from nas.netadapt.inherit import channel_sets, inherit_state, kept_channels, shrink_model
from nas.netadapt.loop import (NetAdaptConfig, NetAdaptResult, NetAdaptRun, TableLatency, Target, netadapt,
                               netadapt_checkpoint)
from nas.netadapt.proposals import (Group, Predictor, Proposal, candidate_widths, make_proposals, propose,
                                    smallest_reachable, width_groups, with_width)

__all__ = [
    "Group", "NetAdaptConfig", "NetAdaptResult", "NetAdaptRun", "Predictor", "Proposal", "TableLatency", "Target",
    "candidate_widths", "channel_sets", "inherit_state", "kept_channels", "make_proposals", "netadapt",
    "netadapt_checkpoint", "propose", "shrink_model", "smallest_reachable", "width_groups", "with_width",
]
