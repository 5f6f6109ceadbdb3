"""A plain training script for tests/test_distributed.py, run alone or by torchrun.

    python tests/distributed_worker.py GRAPHS OUT_DIR [KEY=VALUE ...]
    torchrun --nproc-per-node 2 tests/distributed_worker.py GRAPHS OUT_DIR [KEY=VALUE ...]

Fits a small CGCNNRegressor on the graphs of GRAPHS (a ``save_graphs`` file with
targets) with ``CGCNNRegressor(...).fit(X, y)`` as a user would, and writes
``OUT_DIR/rank<R>.npz`` (predictions, history losses, world size) for every process
and, through ``save_model`` (which only process 0 does), ``OUT_DIR/model.pt``.
KEY=VALUE pairs are estimator parameters (ints, floats, true/false, none or strings).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str]) -> int:
    import torch

    from skcgcnn import CGCNNRegressor
    from skcgcnn.estimators import save_model
    from skcgcnn.estimators._distributed import rank, world_size
    from skcgcnn.graph import load_graphs

    torch.set_num_threads(1)
    graphs_path, out_dir, *pairs = argv
    params = dict(module__atom_fea_len=16, module__h_fea_len=16, module__n_conv=2,
                  batch_size=16, max_epochs=4, lr=0.01, random_state=0)
    params.update({key: _value(value) for key, value in (p.split("=", 1) for p in pairs)})
    bundle = load_graphs(graphs_path)
    X, y = bundle.graphs, np.asarray(bundle.targets, dtype=float)[:, 0]
    reg = CGCNNRegressor(**params).fit(X, y)
    out = Path(out_dir)
    history = reg.history
    np.savez(out / f"rank{rank()}.npz", predictions=reg.predict(X),
             train_loss=np.array(history[:, "train_loss"], dtype=float),
             valid_loss=np.array([row.get("valid_loss", np.nan) for row in history],
                                 dtype=float),
             world_size=world_size(), module_type=type(reg.module_).__name__,
             bn_type=type(reg.module_.convs[0].bn1).__name__,
             env_world=int(os.environ.get("WORLD_SIZE", "1")))
    save_model(reg, out / "model.pt")
    (out / f"rank{rank()}.json").write_text(json.dumps({"done": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
