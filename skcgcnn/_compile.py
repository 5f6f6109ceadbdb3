"""Opt-in ``torch.compile`` of the gated convolutions, with a clean eager fallback.

Inductor fuses the edge-wise chain of :class:`skcgcnn.model.fused.ConvLayer` (BatchNorm ->
sigmoid x softplus -> sum, forward and backward) into a few C++ loops, which eager
torch runs as one pass per op.  Compiling needs a C++ compiler at run time and a
first batch that takes tens of seconds, so it is never the default: call
:func:`compile_convolutions`, or pass ``compile=True`` to an estimator.

Where compiling or the compiled code fails (no compiler, an unsupported platform),
the layer logs a warning and runs eagerly from then on: training goes on either way.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)

_COMPILERS = ("g++", "c++", "clang++")


def cxx_available() -> bool:
    """Whether a C++ compiler for inductor's CPU code is on PATH (or in ``$CXX``)."""
    return any(shutil.which(name) for name in (os.environ.get("CXX", ""), *_COMPILERS)
               if name)


def compile_convolutions(module: nn.Module, **options: Any) -> nn.Module:
    """Compile the edge computation of every gated convolution in ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        A :class:`~skcgcnn.model.CGCNN` (or anything holding ``ConvLayer`` s).
    **options
        Passed to ``torch.compile``; ``dynamic=True`` unless given, so batches of every
        size share one compiled graph.

    Returns
    -------
    module : torch.nn.Module
        The same module, changed in place; its ``state_dict`` keys are unchanged (unlike
        ``torch.compile(module)``, whose wrapper prefixes them with ``_orig_mod.``).

    Examples
    --------
    >>> from skcgcnn.model import CGCNN
    >>> net = compile_convolutions(CGCNN())
    >>> type(net.convs[0].compiled_forward).__name__
    'CompiledOrEager'
    """
    options.setdefault("dynamic", True)
    for layer in module.modules():
        if hasattr(layer, "edge_forward") and hasattr(layer, "compiled_forward"):
            layer.compiled_forward = CompiledOrEager(layer.edge_forward, options)
    return module


class CompiledOrEager:
    """``torch.compile(eager, **options)`` that falls back to ``eager`` for good after
    its first failure, or at once when no C++ compiler is found for a CPU tensor."""

    def __init__(self, eager: Callable, options: dict):
        self.eager = eager
        self.options = dict(options)
        self.compiled = None
        self.failed = False

    def __call__(self, *args, **eager_only):
        """The compiled function of ``args``; falling back, ``eager(*args,
        **eager_only)`` (what only the eager path uses, such as its edge groups)."""
        if not self.failed and self.compiled is None and args[0].device.type == "cpu" \
                and not cxx_available():
            self._give_up("no C++ compiler found (g++, c++, clang++ or $CXX)")
        if self.failed:
            return self.eager(*args, **eager_only)
        try:
            if self.compiled is None:
                self.compiled = torch.compile(self.eager, **self.options)
            return self.compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any backend failure: run eagerly
            self._give_up(f"{type(exc).__name__}: {exc}")
            return self.eager(*args, **eager_only)

    def _give_up(self, why: str) -> None:
        self.failed = True
        logger.warning("torch.compile of the convolution is off (%s); it runs eagerly", why)

    def __getstate__(self) -> dict:
        # compiled code does not pickle or deepcopy: keep the choice, compile again
        return {"eager": self.eager, "options": self.options, "compiled": None,
                "failed": self.failed}


__all__ = ["compile_convolutions", "cxx_available"]
