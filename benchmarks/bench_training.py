"""CGCNN training speed and a learning curve on Materials Project data (issue 3).

1. forward + backward + SGD step of the original model size (atom_fea_len 64, n_conv 3,
   h_fea_len 128, batch 256) with 2 torch threads, in seconds per 1,000 MP crystals
   (batches collated beforehand, as a pure compute figure), for skcgcnn's default
   convolution, the convolution as it was before issue 16 (``--variants previous``),
   the opt-in ``torch.compile`` of it (``--variants compiled``), the paper's equation
   in plain torch (``CGCNN(kernel="reference")``, ``--variants reference``), the
   default on the same batches reduced to one atom per class of equivalent atoms
   (``reduced``, what the estimators train on) and the original's computation
   (``naive``), all on the same crystals, their timed epochs interleaved (``--repeats``
   rounds, the fastest of each kept) so that a loaded machine hits them alike;
2. whole epochs of ``CGCNNRegressor.fit`` on a set (default: all 36,737 crystals) in
   the step's settings (batch 256, SGD, no schedule), collation included, in float32
   and with ``precision="bfloat16"``: the fastest of epochs 2-3, per 1,000 crystals,
   and its ratio to the original's computation's step;
3. ``--curve N``: a run of ``--epochs`` epochs on a seeded N-crystal subset, 80/20
   train/test, printing the test MAE after every epoch.

Usage::

    python benchmarks/bench_training.py [--data DIR] [--limit N] [--skip-epoch]
                                        [--variants default,reduced,previous,compiled,
                                                    reference,naive]
                                        [--repeats 3] [--curve 5000 --epochs 100]
                                        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mp-formation-energy-36737"


def naive_cgcnn():
    """The original CGCNN's computation, for timing under the same conditions: every
    edge's (v_i, v_j, u_ij) concatenated into one (N, M, 2F + G) tensor before one Linear
    (as the original ConvLayer does), same parameters as skcgcnn's CGCNN."""
    import torch

    from skcgcnn.model import CGCNN

    class Naive(CGCNN):
        def atom_embeddings(self, atom_fea, nbr_idx, nbr_dist, atom_weight=None):
            nbr_fea = self.expansion(nbr_dist)
            atom_fea = self.embedding(atom_fea)
            n, m = nbr_idx.shape
            for conv in self.convs:
                f = conv.atom_fea_len
                total = torch.cat([atom_fea.unsqueeze(1).expand(n, m, f), atom_fea[nbr_idx],
                                   nbr_fea], dim=2)
                gated = conv.bn1(conv.fc_full(total).view(-1, 2 * f)).view(n, m, 2 * f)
                nbr_filter, nbr_core = gated.chunk(2, dim=2)
                summed = (conv.sigmoid(nbr_filter) * conv.softplus1(nbr_core)).sum(dim=1)
                atom_fea = conv.softplus2(atom_fea + conv.bn2(summed))
            return atom_fea

    return Naive()


def previous_cgcnn():
    """skcgcnn's CGCNN with the convolution as it was before issue 16: two gathers added,
    then the edge product, BatchNorm in eval mode as its own pass."""
    import torch
    from torch.nn import functional as fn

    from skcgcnn.model import CGCNN, ConvLayer

    class Previous(ConvLayer):
        def edge_forward(self, atom_fea, src, dst, expanded, inverse, n_atoms, dense,
                         atom_weight=None, groups=None):
            expanded = expanded.index_select(0, inverse)  # one row per edge, as it was
            f = self.atom_fea_len
            w, b = self.fc_full.weight, self.fc_full.bias
            self_part = fn.linear(atom_fea, w[:, :f], b)
            nbr_part = fn.linear(atom_fea, w[:, f:2 * f])
            gated = torch.addmm(self_part.index_select(0, src)
                                + nbr_part.index_select(0, dst), expanded, w[:, 2 * f:].t())
            gated = self.bn1(gated)
            nbr_filter, nbr_core = gated.chunk(2, dim=1)
            message = self.sigmoid(nbr_filter) * self.softplus1(nbr_core)
            summed = message.view(n_atoms, -1, f).sum(dim=1) if dense else \
                atom_fea.new_zeros(n_atoms, f).index_add_(0, src, message)
            return self.softplus2(atom_fea + self.bn2(summed))

    net = CGCNN()
    for i, conv in enumerate(net.convs):
        twin = Previous(conv.atom_fea_len, conv.nbr_fea_len)
        twin.load_state_dict(conv.state_dict())
        net.convs[i] = twin
    return net


def make_network(variant: str):
    """A CGCNN (seeded: every variant starts from the same weights) of one variant."""
    import torch

    from skcgcnn._compile import compile_convolutions
    from skcgcnn.model import CGCNN

    torch.manual_seed(0)
    if variant in ("default", "reduced"):
        return CGCNN()
    if variant == "previous":
        return previous_cgcnn()
    if variant == "compiled":
        return compile_convolutions(CGCNN())
    if variant == "reference":
        return CGCNN(kernel="reference")
    if variant == "naive":
        return naive_cgcnn()
    raise ValueError(f"unknown variant {variant!r}")


def compute_speeds(graphs, y, variants, n_crystals: int = 2048, repeats: int = 3) -> dict:
    """Seconds per 1,000 crystals of a forward + backward + SGD step for each variant:
    the same batches, one warm-up epoch each (compiling, for "compiled"), then
    ``repeats`` rounds of one timed epoch per variant; the fastest epoch of each."""
    import torch

    rng = np.random.default_rng(0)
    rows = rng.choice(len(graphs), size=min(n_crystals, len(graphs)), replace=False)
    batches = {}
    for reduce in (False, True):
        batches[reduce] = []
        for lo in range(0, len(rows), 256):
            part = rows[lo:lo + 256]
            b = {k: torch.as_tensor(v) for k, v in graphs.collate(part, reduce).items()}
            b["nbr_idx"] = b["nbr_idx"].long()
            target = torch.as_tensor(y[part], dtype=torch.float32).unsqueeze(1)
            batches[reduce].append((b, target))

    def epoch(net, opt, name):
        for b, target in batches[name == "reduced"]:
            loss = torch.nn.functional.mse_loss(net(**b), target)
            opt.zero_grad()
            loss.backward()
            opt.step()

    runs = {}
    for name in variants:
        net = make_network(name)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        start = time.perf_counter()
        epoch(net, opt, name)  # warm-up
        runs[name] = (net, opt)
        print(f"  {name}: warm-up epoch {time.perf_counter() - start:.1f} s", flush=True)
    best = {name: float("inf") for name in variants}
    for _ in range(repeats):
        for name, (net, opt) in runs.items():
            start = time.perf_counter()
            epoch(net, opt, name)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: seconds / len(rows) * 1000 for name, seconds in best.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-epoch", action="store_true")
    parser.add_argument("--variants", default="default,reduced,previous,naive",
                        help="step variants to time, comma-separated, of default, reduced, "
                             "previous, compiled (torch.compile, opt-in), reference "
                             "(kernel='reference') and naive")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved timed rounds (the fastest epoch of each variant)")
    parser.add_argument("--curve", type=int, default=0, help="subset size for the MAE curve")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-mallopt", action="store_true",
                        help="leave glibc malloc alone (else it is set as "
                             "skcgcnn.set_cpu_performance_defaults does)")
    args = parser.parse_args(argv)
    if not args.no_mallopt:
        from skcgcnn._malloc import keep_freed_memory

        keep_freed_memory()

    import torch
    from skorch.callbacks import EpochScoring
    from skorch.helper import predefined_split

    from skcgcnn import CGCNNRegressor, StructureGraphTransformer
    from skcgcnn.datasets import load_cgcnn_folder
    from skcgcnn.estimators import GraphDataset

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()}", flush=True)
    frame = load_cgcnn_folder(args.data, limit=args.limit, n_jobs=2)
    y = frame.iloc[:, 1].to_numpy(dtype=np.float64) if frame.columns[0] == "structure" \
        else frame["target"].to_numpy(dtype=np.float64)
    start = time.perf_counter()
    graphs = StructureGraphTransformer(n_jobs=2).fit_transform(frame["structure"])
    print(f"{len(graphs)} crystals, {len(graphs.numbers)} atoms, graphs built in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    results: dict = {"n_crystals": len(graphs)}

    speeds = compute_speeds(graphs, y, args.variants.split(","), repeats=args.repeats)
    keys = {"default": "fwd_bwd_step_s_per_1000",
            "naive": "fwd_bwd_step_s_per_1000_original_computation"}
    for name, per_1000 in speeds.items():
        results[keys.get(name, f"fwd_bwd_step_s_per_1000_{name}")] = per_1000
    print("forward+backward+step (64/3/128, batch 256), s per 1,000 crystals, same batches:",
          flush=True)
    for name, per_1000 in speeds.items():
        ratio = "" if "naive" not in speeds else \
            f"  ({speeds['naive'] / per_1000:.2f}x the original's computation)"
        print(f"  {name:9s} {per_1000:.3f}{ratio}", flush=True)

    if not args.skip_epoch:
        # whole epochs through the public fit, in the step's settings (batch 256, SGD, no
        # schedule), collation included; the fastest of epochs 2 and 3, per 1,000
        # crystals, beside the original's computation's step above
        for precision in ("float32", "bfloat16"):
            reg = CGCNNRegressor(max_epochs=3, batch_size=256, optimizer="sgd",
                                 lr_schedule=None, precision=precision, random_state=0)
            reg.fit(graphs, y)
            per_1000 = min(reg.history[1:, "dur"]) / len(graphs) * 1000
            results[f"fit_epoch_s_per_1000_{precision}"] = per_1000
            ratio = "" if "naive" not in speeds else \
                f"  ({per_1000 / speeds['naive']:.2f}x the original's computation's step)"
            print(f"fit epoch ({precision}, batch 256, SGD) on {len(graphs)} crystals: "
                  f"{per_1000:.3f} s per 1,000{ratio}", flush=True)

    if args.curve:
        rng = np.random.default_rng(0)
        rows = rng.choice(len(graphs), size=min(args.curve, len(graphs)), replace=False)
        n_test = len(rows) // 5
        test, train = rows[:n_test], rows[n_test:]
        reg = CGCNNRegressor(
            max_epochs=args.epochs, random_state=0, verbose=1,
            train_split=predefined_split(GraphDataset(graphs[test], y[test].reshape(-1, 1)
                                                      .astype(np.float32))),
            callbacks=[("test_mae", EpochScoring("neg_mean_absolute_error", name="test_mae",
                                                 lower_is_better=False))])
        start = time.perf_counter()
        reg.fit(graphs[train], y[train])
        seconds = time.perf_counter() - start
        curve = [-v for v in reg.history[:, "test_mae"]]
        results["curve"] = {"n_train": len(train), "n_test": len(test), "seconds": seconds,
                            "test_mae": curve}
        print(f"{args.epochs} epochs on {len(train)} crystals: {seconds:.0f} s; test MAE "
              f"by epoch (every 10th): {[round(v, 4) for v in curve[9::10]]}; "
              f"final {curve[-1]:.4f} eV/atom", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
