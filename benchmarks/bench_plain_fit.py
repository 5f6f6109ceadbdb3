"""Whole ``fit`` epochs the way a user's script runs them, beside the paper's eq. 5 (issue 25).

Nothing is set: no ``OMP_WAIT_POLICY``, no thread count, no malloc settings, no
``skcgcnn.set_cpu_performance_defaults()`` -- run it as ``python
benchmarks/bench_plain_fit.py`` from a plain shell (it refuses to run when
``OMP_WAIT_POLICY`` or ``OMP_NUM_THREADS`` is set, unless ``--allow-env``).

In one process, on the same crystals (``--limit`` seeded MP crystals):

* **skcgcnn**: ``CGCNNRegressor(batch_size=256, optimizer="sgd", lr_schedule=None)``
  (the original's network size, 64/3/128) ``.fit(graphs, y)`` for ``--epochs``
  epochs, through the public ``fit``: batching, the atom reduction, the epoch's
  bookkeeping included; the epochs' durations from its history, the first left out;
* **reference**: a plain PyTorch implementation of the paper's eq. 5 (the layer of
  the original ``cgcnn/model.py``, written out here: every edge's ``(v_i, v_j,
  u_ij)`` concatenated into an ``(N, M, 2F + G)`` tensor, one Linear, BatchNorm, the
  gate, the sum), same sizes, SGD with momentum, trained on batches built
  beforehand (so it pays no batching at all), for the same epochs.

Their rounds are interleaved (``--repeats``), in two conditions: ``quiet`` (nothing
else asked of the machine by this script; stop your own background jobs) and
``loaded`` (``--competitors`` CPU-bound processes started beside it, as another job on
the same machine).  Printed per condition: seconds per 1,000 crystals of each (median
of the timed epochs) and skcgcnn's time as a multiple of the reference's.

Usage::

    python benchmarks/bench_plain_fit.py [--data DIR] [--limit 3000] [--epochs 4]
                                         [--repeats 2] [--conditions quiet,loaded]
                                         [--competitors 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737"
BATCH = 256
BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def reference_model(n_features: int, n_gaussians: int):
    """The paper's CGCNN (eq. 5 convolutions, mean pooling) in plain torch, 64/3/128."""
    import torch
    from torch import nn

    class Conv(nn.Module):  # eq. 5, as the original ConvLayer
        def __init__(self, f: int, g: int) -> None:
            super().__init__()
            self.f = f
            self.fc_full = nn.Linear(2 * f + g, 2 * f)
            self.bn1, self.bn2 = nn.BatchNorm1d(2 * f), nn.BatchNorm1d(f)

        def forward(self, v, u, nbr_idx):
            n, m = nbr_idx.shape
            z = torch.cat([v.unsqueeze(1).expand(n, m, self.f), v[nbr_idx, :], u], dim=2)
            gated = self.bn1(self.fc_full(z).view(-1, 2 * self.f)).view(n, m, 2 * self.f)
            gate, core = gated.chunk(2, dim=2)
            summed = (torch.sigmoid(gate) * nn.functional.softplus(core)).sum(dim=1)
            return nn.functional.softplus(v + self.bn2(summed))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Linear(n_features, 64)
            self.convs = nn.ModuleList(Conv(64, n_gaussians) for _ in range(3))
            self.conv_to_fc = nn.Linear(64, 128)
            self.fc_out = nn.Linear(128, 1)

        def forward(self, atom_fea, u, nbr_idx, crystal_idx, n_crystals):
            v = self.embedding(atom_fea)
            for conv in self.convs:
                v = conv(v, u, nbr_idx)
            pooled = torch.zeros(n_crystals, v.shape[1]).index_add_(0, crystal_idx, v)
            counts = torch.bincount(crystal_idx, minlength=n_crystals).clamp(min=1)
            crystal = nn.functional.softplus(pooled / counts.unsqueeze(1))
            return self.fc_out(nn.functional.softplus(self.conv_to_fc(crystal)))

    return Net()


def reference_batches(graphs, y, seed: int = 0):
    """The reference's batches, built once: atom features, Gaussian-expanded distances
    (N, M, G), neighbour indices (padded as the original: atom 0 at radius + 1),
    crystal of each atom, targets."""
    import torch

    from skcgcnn.estimators import graphs_to_tensors

    params = graphs.graph_params
    centres = np.arange(params["dmin"], params["radius"] + params["step"], params["step"])
    order = np.random.default_rng(seed).permutation(len(graphs))
    batches = []
    for start in range(0, len(order), BATCH):
        rows = np.sort(order[start:start + BATCH])
        t = graphs_to_tensors(graphs, rows)
        idx, dist = t["nbr_idx"].clone(), t["nbr_dist"].clone()
        missing = idx < 0
        idx[missing], dist[missing] = 0, params["radius"] + 1.0
        u = torch.exp(-(dist.unsqueeze(-1) - torch.as_tensor(centres, dtype=torch.float32))
                      ** 2 / params["step"] ** 2)
        target = torch.as_tensor(y[rows], dtype=torch.float32).reshape(-1, 1)
        batches.append((t["atom_fea"], u, idx, t["crystal_idx"], len(rows), target))
    return batches, len(centres)


def reference_epochs(batches, n_features: int, n_gaussians: int, epochs: int) -> list[float]:
    """Seconds of each of ``epochs`` training epochs of the reference (SGD, MSE)."""
    import torch

    torch.manual_seed(0)
    net = reference_model(n_features, n_gaussians)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        net.train()
        for atom_fea, u, idx, crystal_idx, n, target in batches:
            loss = torch.nn.functional.mse_loss(net(atom_fea, u, idx, crystal_idx, n), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def skcgcnn_epochs(graphs, y, epochs: int) -> list[float]:
    """Seconds of each epoch of ``CGCNNRegressor.fit`` in the reference's settings."""
    from skcgcnn import CGCNNRegressor

    reg = CGCNNRegressor(max_epochs=epochs, batch_size=BATCH, optimizer="sgd", lr=0.01,
                         optimizer__weight_decay=0.0, lr_schedule=None, random_state=0,
                         verbose=0)
    reg.fit(graphs, y)
    return list(reg.history[:, "dur"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per fit; the first of each is not timed")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--conditions", default="quiet,loaded")
    parser.add_argument("--competitors", type=int, default=1,
                        help="CPU-bound processes beside it in the loaded condition")
    parser.add_argument("--allow-env", action="store_true",
                        help="run even with OMP_WAIT_POLICY / OMP_NUM_THREADS set")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    preset = [k for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
              if k in os.environ]
    if preset and not args.allow_env:
        parser.error(f"{', '.join(preset)} set: this benchmark measures a plain process "
                     "(unset them, or pass --allow-env)")

    import torch

    from skcgcnn import StructureGraphTransformer
    from skcgcnn.datasets import load_cgcnn_folder

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, {os.cpu_count()} cores",
          flush=True)
    frame = load_cgcnn_folder(args.data, limit=args.limit)
    y = frame["target"].to_numpy(dtype=np.float64)
    graphs = StructureGraphTransformer().fit_transform(frame["structure"])
    batches, n_gaussians = reference_batches(graphs, y)
    n_features = batches[0][0].shape[1]
    print(f"{len(graphs)} crystals, {len(graphs.numbers)} atoms", flush=True)

    results: dict = {"n_crystals": len(graphs), "epochs": args.epochs,
                     "threads": torch.get_num_threads(), "conditions": {}}
    for condition in args.conditions.split(","):
        competitors = []
        if condition == "loaded":
            competitors = [subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=3600)])
                           for _ in range(args.competitors)]
            time.sleep(1.0)
        elif condition != "quiet":
            parser.error(f"unknown condition {condition!r}: quiet or loaded")
        try:
            ours, ref = [], []
            for _ in range(args.repeats):
                ours += skcgcnn_epochs(graphs, y, args.epochs)[1:]
                ref += reference_epochs(batches, n_features, n_gaussians, args.epochs)[1:]
        finally:
            for p in competitors:
                p.kill()
                p.wait()
        per_1000 = {name: statistics.median(s) / len(graphs) * 1000
                    for name, s in (("skcgcnn", ours), ("reference", ref))}
        ratio = per_1000["skcgcnn"] / per_1000["reference"]
        results["conditions"][condition] = {**per_1000, "ratio": ratio,
                                            "skcgcnn_epochs_s": ours, "reference_epochs_s": ref,
                                            "competitors": len(competitors)}
        print(f"{condition:6s} ({len(competitors)} competing process(es)): skcgcnn fit "
              f"{per_1000['skcgcnn']:.3f} s per 1,000 crystals, eq.-5 reference "
              f"{per_1000['reference']:.3f} s -> {ratio:.2f}x the reference", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
