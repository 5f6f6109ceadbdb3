"""``skcgcnn export``: a trained model as an ONNX file that onnxruntime runs without torch.

MODEL is resolved as ``skcgcnn predict`` resolves it (a ``model.pt`` of ``skcgcnn
train``, an original ``.pth.tar``, or the name of a pretrained model);
:func:`skcgcnn.export.export_onnx` writes the file, checked under onnxruntime on a small
batch, and :class:`skcgcnn.export.OnnxPredictor` predicts with it.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from ._common import CLIError, common_options, one_line

logger = logging.getLogger(__name__)

#: The formats of --format.
FORMATS = ("onnx",)

__all__ = ["FORMATS", "add_export_parser", "default_output", "run_export"]


def add_export_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to an ``argparse`` subparsers object (imported only
    when it is run: :data:`skcgcnn.cli.EXTERNAL_COMMANDS`)."""
    p = sub.add_parser(
        "export", parents=[common_options()],
        help="write a trained model as an ONNX file, for onnxruntime without torch",
        description=(
            "Write a trained CGCNN regressor (a model.pt from 'skcgcnn train', an "
            "original .pth.tar or a pretrained model's name) as an ONNX file: the network "
            "with the target scaling inside, and the graph settings and atom features "
            "in its metadata. Predict with skcgcnn.export.OnnxPredictor (onnxruntime, "
            "no torch). Needs pip install 'skcgcnn[onnx]'."),
        epilog="example: skcgcnn export mp-formation-energy --format onnx "
               "--output fe.onnx",
    )
    p.add_argument("model", metavar="MODEL",
                   help="model.pt from 'skcgcnn train', an original CGCNN .pth.tar, or the "
                        "name of a pretrained model")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="the file format (default: onnx)")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="the file to write (default: MODEL's name with .onnx, in the "
                        "current folder)")
    p.add_argument("--trusted", action="store_true",
                   help="allow checkpoints that hold pickled Python objects; only for "
                        "files you trust")
    p.set_defaults(func=run_export)
    return p


def default_output(model: str) -> str:
    """``mp-formation-energy`` -> ``mp-formation-energy.onnx``; ``runs/a/model.pt`` ->
    ``model.onnx`` (in the current folder)."""
    name = Path(model).name
    for suffix in (".pth.tar", ".pt", ".pth"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
            break
    return f"{name}.onnx"


def run_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx
    from .predict import _load_model

    output = Path(args.output or default_output(args.model)).expanduser()
    if output.is_dir():
        raise CLIError(f"--output {str(output)!r} is a folder; give a file name")
    loading = argparse.Namespace(model=args.model, trusted=args.trusted, device="cpu")
    transformer, est, _ = _load_model(loading)
    try:
        export_onnx(est, output, transformer=transformer)
    except TypeError as exc:  # a model that cannot be exported: the message says why
        raise CLIError(f"MODEL {args.model!r}: {one_line(exc)}") from exc
    size = os.path.getsize(output)
    print(f"wrote {output} ({size / 1024:.0f} KiB, ONNX); predict with "
          f"skcgcnn.export.OnnxPredictor({str(output)!r}).predict(structures)")
    return 0
