"""The denoising network compiled with torch.compile, falling back to eager when compiling fails.

An edit calls the UNet once per DDIM step with the same shapes. On a GPU each call launches over a thousand small
kernels, and at 512 px their launch overhead, not their compute, bounds the edit: CUDA graphs (torch.compile's
"reduce-overhead" mode) replay the whole call as one launch. Shapes are kept static (one graph per batch and edit size;
a run has few of them), so no graph is recorded for shapes it never sees again.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from in2n.console import notice, notice_once


class CompiledModule:
    """Calls `module` compiled (CUDA graphs on CUDA, plain torch.compile elsewhere); when compiling fails (no C++
    compiler, an operation the compiler does not support), says so once and calls it eagerly from then on.

    Args:
        module: the network.
        device: where it runs.
        what: its name in the notices, e.g. "InstructPix2Pix UNet".
        describe_call: the inputs of a call in words (e.g. "1 view at 512x384 px"), for the notice that a new input
            shape is being compiled; calls of the same input shapes reuse one compiled graph.
    """

    def __init__(
        self,
        module: nn.Module,
        device: torch.device,
        what: str,
        describe_call: Callable[..., str] = lambda *args, **kwargs: "new inputs",
    ) -> None:
        self.module = module
        self.what = what
        self.describe_call = describe_call
        self.cuda_graphs = device.type == "cuda"
        self._shapes: set = set()
        self.compiled: Optional[Callable[..., Any]] = None
        try:
            if self.cuda_graphs:
                self.compiled = torch.compile(module, mode="reduce-overhead", dynamic=False)
            else:
                self.compiled = torch.compile(module, dynamic=False)
        except Exception as error:  # torch.compile refuses up front where it is unsupported (Python version, platform)
            self._fall_back(error)

    @property
    def is_compiled(self) -> bool:
        """Whether calls still go through the compiled module (False once it fell back to eager)."""
        return self.compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
            if shapes not in self._shapes:
                self._shapes.add(shapes)
                notice(
                    f"compiling the {self.what} for {self.describe_call(*args, **kwargs)}: a one-off pause (about a "
                    "minute on a GPU), once per view size and number of views per edit"
                )
            try:
                if self.cuda_graphs:
                    # The previous call's outputs are consumed: its graph's output buffers may be overwritten.
                    torch.compiler.cudagraph_mark_step_begin()
                return self.compiled(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as error:  # compiling happens lazily, on the first call
                self._fall_back(error)
        return self.module(*args, **kwargs)

    def _fall_back(self, error: BaseException) -> None:
        self.compiled = None
        lines = str(error).strip().splitlines()
        reason = lines[0][:200] if lines else type(error).__name__
        notice_once(
            f"Compiling the {self.what} failed ({reason}); it runs uncompiled from now on. On Linux, torch.compile "
            "needs a C++ compiler (gcc) on the PATH, and on CUDA also Triton."
        )
