"""Thread control: the one helper that sets torch's intra-op thread count for a block of work.

onnxruntime sessions get their threads from their own options (:func:`nas.latency.standalone_measure.ort_session`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: unchanged); the previous count is
    restored afterwards, also on an error."""
    import torch

    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
