"""Which block pairs can hold a mutually eligible pair, once users are ordered by group.

Both engines visit only the block pairs :func:`meeting_blocks` allows: a pair ``(I, J)`` is
skipped when no user of ``I`` seeks any group present in ``J``, or no user of ``J`` seeks any
group present in ``I`` (eligibility needs both directions). Users are scored in group order
(:func:`group_order`) so that blocks hold few groups and whole block pairs fall away; keys
carry the caller's indices, so the order does not change results or ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["group_order", "meeting_blocks", "skipped_share", "visit_order"]


def group_order(slot: Tensor) -> Tensor:
    """Users by group, the caller's order kept within a group (a stable permutation)."""
    return torch.argsort(slot, stable=True)


def meeting_blocks(slot: Tensor, sought: Tensor, block: int) -> Tensor:
    """(nb, nb) bools: may block ``I`` hold a user eligible both ways with one of block ``J``.

    ``slot`` (n,) and ``sought`` (n, G) are in the order the users are scored.
    """
    n, g = sought.shape
    nb = -(-n // block)
    of_block = torch.arange(n) // block
    present = torch.zeros(nb, g, dtype=torch.float64)
    present[of_block, slot] = 1.0
    seeks = torch.zeros(nb, g, dtype=torch.float64).index_add_(0, of_block, sought.to(torch.float64))
    one_way = (seeks.clamp(max=1.0) @ present.t()) > 0
    return one_way & one_way.t()


def visit_order(meet: Tensor) -> list[tuple[int, int]]:
    """Block pairs ``(I, J)``, ``J >= I``, that may meet: diagonal ones first, then row-major."""
    nb = meet.shape[0]
    diag = [(b, b) for b in range(nb) if bool(meet[b, b])]
    upper = torch.nonzero(torch.triu(meet, diagonal=1)).tolist()
    return diag + [(int(i), int(j)) for i, j in upper]


def skipped_share(meet: Tensor, n: int, block: int) -> float:
    """Share of the ``n (n - 1)`` ordered pairs of distinct users in block pairs never scored."""
    if n < 2:
        return 0.0
    sizes = torch.full((meet.shape[0],), float(block), dtype=torch.float64)
    sizes[-1] = n - block * (meet.shape[0] - 1)
    skip = (~meet).to(torch.float64)
    pairs = float(sizes @ skip @ sizes - (skip.diagonal() * sizes).sum())
    return pairs / (n * (n - 1))
