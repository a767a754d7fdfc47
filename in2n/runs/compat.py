"""Let torch >= 2.6 load nerfstudio checkpoints without turning off `weights_only`.

nerfstudio 1.1.5 saves learning-rate schedulers whose state holds numpy scalars. From torch 2.6 on, `torch.load`
defaults to `weights_only=True` and refuses those globals, so `--load-dir`, `ns-render`, `ns-viewer` and `ns-export`
fail with an UnpicklingError. Allow-listing exactly the numpy types involved keeps the safe loader in force.
"""

from __future__ import annotations

import numpy as np
import torch


def numpy_checkpoint_globals() -> list:
    """The numpy callables and types a nerfstudio checkpoint may reference."""
    # numpy < 2 exposes the scalar reconstructor as numpy.core.multiarray.scalar; pickles name it by that path.
    from numpy.core.multiarray import scalar  # type: ignore[attr-defined]

    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    return [scalar, np.dtype, *dtype_classes]


def allow_numpy_in_checkpoints() -> None:
    """Register the numpy globals with torch's safe unpickler (idempotent)."""
    torch.serialization.add_safe_globals(numpy_checkpoint_globals())
