"""``skcgcnn featurize``: build the crystal graphs of a data folder once for ``train --graphs``.

The graphs, ids and targets go into an ``.npz`` file of arrays and JSON
(:func:`skcgcnn.graph.save_graphs`), which ``skcgcnn train --graphs FILE`` reads.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ._common import DATA_DIR, CLIError, data_options, graph_options, graph_params
from ._data import build_graphs, existing_root

__all__ = ["add_featurize_parser", "run_featurize"]


def add_featurize_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "featurize", parents=[common],
        help="build the crystal graphs of a dataset once and save them for 'train --graphs'",
        description=(
            "Read a CGCNN data folder, build the crystal graphs of all its structures and "
            "save them with their ids and targets in an .npz file (arrays and JSON, no "
            "pickle), which 'skcgcnn train --graphs FILE' reads instead of building the "
            "graphs again."),
        epilog="example: skcgcnn featurize data/mp-36737 --output graphs.npz --n-jobs -1",
    )
    p.add_argument("root_dir", metavar=DATA_DIR,
                   help="CGCNN data folder (or a .tar.gz of CIFs beside id_prop.csv)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="graph file to write (.npz)")
    graph_options(p, defaults_none=False)
    data_options(p)
    p.set_defaults(func=run_featurize)


def run_featurize(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    params = graph_params(args)
    if not params["radius"] > 0 or params["max_num_nbr"] < 1 or not params["step"] > 0:
        raise CLIError("--radius and --step must be positive and --max-num-nbr at least 1",
                       status=2)
    output = Path(args.output).expanduser()
    if output.is_dir():
        raise CLIError(f"--output {args.output!r} is a folder; give a file name")
    if not output.parent.is_dir():
        raise CLIError(f"--output {args.output!r}: folder {str(output.parent)!r} does not "
                       "exist")
    root = existing_root(args.root_dir)
    transformer, graphs, targets, names = build_graphs(root, args, params)
    from ..reporting import jsonable

    errors = [[int(pos), jsonable(ident), str(message)]
              for pos, ident, message in transformer.errors_]
    graphs.save(output, targets, names, info={"source": str(root), "errors": errors})
    print(f"{len(graphs)} crystal graphs ({len(graphs.numbers)} atoms, "
          f"{graphs.nbytes / 1e6:.1f} MB of arrays) of {root} written to {output} in "
          f"{time.perf_counter() - started:.1f} s")
    return 0

