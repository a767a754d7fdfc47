"""The resolution a view is edited at."""

from __future__ import annotations

from typing import Tuple


def edit_size(height: int, width: int, max_size: int, multiple: int) -> Tuple[int, int]:
    """(height, width) no larger than `max_size` on the long side, aspect kept, both multiples of `multiple`.

    The VAE halves the resolution `log2(multiple)` times, so sides must divide by `multiple`; views are
    shrunk when larger than the size the diffusion model was trained at, which otherwise runs out of memory.
    """
    scale = min(1.0, max_size / max(height, width))
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (height, width))  # type: ignore[return-value]
