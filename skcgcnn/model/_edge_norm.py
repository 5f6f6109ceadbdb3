"""The gated convolution's edge batch norm and gate, computed from the row tables.

In :class:`skcgcnn.model.fused.ConvLayer`, edge e's pre-activation is a sum of three table
rows, ``z_e = S[src_e] + A[dst_e] + T[dist_e]`` (per atom as centre, per atom as
neighbour, per distinct distance), and ``bn1`` normalises ``z`` over the edges.  Done
on ``z`` itself, the batch norm and its backward make about twenty passes over the
(E, 2F) edge tensor, which on a CPU are bound by memory traffic.  Here they are done on
the tables, which are several times smaller than ``z`` (issue 16):

* the mean is ``P_S @ S + P_A @ A + P_T @ T``, with ``P`` the share of the batch's edge
  weight that uses each row;
* the variance is a sum of per-table terms and of cross terms such as
  ``sum_e p_e S[src_e] * A[dst_e]``, each a product of a table with a sum of rows of
  another (``embedding_bag`` gathers, no (E, 2F) tensor);
* the distance table is ``X W_u^T`` for the expanded distinct distances ``X``
  (D, G); its terms are products of ``W_u`` with (G, G) and (N, G) sums of ``X``
  made once per batch, so its (D, 2F) rows are made once, scaled, for the output;
* the normalised edges ``alpha (z - mu) + beta`` are one ``embedding_bag`` over the
  tables scaled by ``alpha``, and the gate ``sigmoid(y_f) * softplus(y_c)`` and the sum
  over each atom's edges follow, a chunk of edges at a time, so that a chunk's (E, 2F)
  tensors stay in the CPU's cache;
* the backward sums the gradient of ``y`` per centre, per neighbour and per distance,
  chunk by chunk, and multiplies the distance sums with ``X``; the batch norm's
  closed-form gradient is linear in ``z``, so it goes through these sums.

Each table is centred on its own weighted mean before the products, so the variance
does not come from the difference of two large numbers.  Edges are weighted by their
centre atom's weight (batches of one atom per class of equivalent atoms), so the
statistics are those of the full graph.  Exact up to float rounding; the tests compare
it with the batch norm on ``z`` in float64.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as fn


def _stable_order(keys: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """The edges sorted by ``keys`` (stable) and the first position of each group."""
    if keys.device.type == "cpu":
        order = torch.from_numpy(np.argsort(keys.numpy(), kind="stable"))
    else:
        order = torch.sort(keys, stable=True).indices
    return order, _starts(torch.bincount(keys, minlength=n_groups))


def _starts(counts: Tensor) -> Tensor:
    return torch.cumsum(counts, 0) - counts


#: row blocks of the products with the expanded distances
X_BLOCKS = 8

#: edges per chunk of the gate's passes: a chunk's (E, 2F) tensors stay in the CPU's
#: cache instead of making round trips to memory
CHUNK_EDGES = 8192


def _chunked(device: torch.device) -> bool:
    """Whether the gate's passes go by chunks: on the CPU, with one thread or with
    spinning OpenMP threads.  Each operation on several threads starts a parallel region,
    and sleeping threads (``OMP_WAIT_POLICY=PASSIVE``, the command line's default) are
    slow to wake: there a chunked step measured 15 % slower than one pass, while with
    one thread or spinning threads it was 10-30 % faster."""
    if device.type != "cpu":  # no cache to fit
        return False
    return torch.get_num_threads() == 1 \
        or os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"


def _without_autocast(function):
    """Run ``function`` with autocast off: it picks its own precisions (float32 sums
    of bf16 tables), and mixed operands must not be recast."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return function(*args, **kwargs)
    return run


class EdgeGroups:
    """What :func:`gated_edge_conv` needs of one batch's edges, made once and shared by
    the layers (it depends on the graph only): edge weights, the edges grouped by
    neighbour, chunks of whole atoms, and sums of the expanded distances ``X``.

    ``expanded`` (D, G): the expansion of the distinct distances; edge e's is row
    ``inverse[e]``.  ``atom_weight`` (N,) or None: how many atoms each one stands for.
    ``dtype``: the network's; the sums are float64 for float64, else float32.
    """

    @_without_autocast
    def __init__(self, src: Tensor, dst: Tensor, inverse: Tensor, expanded: Tensor,
                 n_atoms: int, dense: bool, atom_weight: Tensor | None,
                 dtype: torch.dtype = torch.float32):
        self.n_atoms, self.n_dist, self.dense = n_atoms, len(expanded), dense
        self.src, self.dst, self.inverse = src, dst, inverse
        self._chunks = None
        # per-batch sums in float32, or float64 for a float64 network
        work = torch.float64 if dtype == torch.float64 else torch.float32
        self._work = work
        weight = (torch.ones(len(src), dtype=work, device=src.device) if atom_weight is None
                  else atom_weight.to(work).index_select(0, src))
        self.total = weight.sum()                    # edges of the full graph
        share = weight / self.total                  # p_e, summing to 1
        per_atom = (torch.ones(n_atoms, dtype=work, device=src.device)
                    if atom_weight is None else atom_weight.to(work))
        self.src_starts = _starts(torch.bincount(src, minlength=n_atoms))
        self.by_nbr, self.nbr_starts = _stable_order(dst, n_atoms)
        # per neighbour atom j: the centres of its edges, and their weights
        self.nbr_centres = src.index_select(0, self.by_nbr)
        # rows of [S; A; T] summed per edge by the forward's embedding_bag
        self.bags = torch.stack([src, dst + n_atoms, inverse + 2 * n_atoms], dim=1)
        # sums of the centred expansion Xc = X - mean (weighted by use) per batch
        x = expanded.detach().to(work)
        dist_share = torch.bincount(inverse, weights=share, minlength=len(x))
        x_mean = dist_share @ x
        x_centred = x - x_mean
        nbr_centre_share = share.index_select(0, self.by_nbr)
        # per atom: Xc summed over its edges, and p_e Xc over the edges to it
        if dense:
            centre_x = fn.embedding_bag(inverse.view(n_atoms, -1), x_centred, mode="sum")
        else:
            centre_x = fn.embedding_bag(inverse, x_centred, self.src_starts, mode="sum")
        nbr_x = fn.embedding_bag(inverse.index_select(0, self.by_nbr), x_centred,
                                 self.nbr_starts, mode="sum",
                                 per_sample_weights=nbr_centre_share)
        atom_share = per_atom / self.total
        self._sums = {
            "atom_share": atom_share,
            "centre_share": torch.bincount(src, weights=share, minlength=n_atoms),
            "nbr_share": torch.bincount(dst, weights=share, minlength=n_atoms),
            "nbr_centre_share": nbr_centre_share,
            "x": x,                                                     # (D, G)
            "x_mean": x_mean,                                           # (G,)
            "centre_x": centre_x,                                       # (N, G)
            "centre_share_x": centre_x * atom_share.unsqueeze(1),       # (N, G)
            "nbr_x": nbr_x,                                             # (N, G)
            "x_cov": x_centred.t() @ (x_centred * dist_share.unsqueeze(1)),  # (G, G)
        }
        # X is banded (Gaussians of sorted distances, with exact zeros far from their
        # centres): the products with X go by blocks of rows over their nonzero columns
        self.x_blocks = []
        nonzero = x != 0
        bounds = np.linspace(0, len(x), X_BLOCKS + 1).astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi > lo:
                cols = torch.nonzero(nonzero[lo:hi].any(dim=0)).flatten().tolist()
                c_lo, c_hi = (cols[0], cols[-1] + 1) if cols else (0, 0)
                self.x_blocks.append((slice(int(lo), int(hi)), slice(c_lo, c_hi)))
        self._cast = {}

    def x_times(self, weight: Tensor, out: Tensor) -> Tensor:
        """``X @ weight.T`` into ``out`` (D, K), by blocks."""
        x = self.get("x", weight.dtype)
        for rows, cols in self.x_blocks:
            if cols.stop > cols.start:
                torch.mm(x[rows, cols], weight[:, cols].t(), out=out[rows])
            else:
                out[rows] = 0.0
        return out

    def times_x(self, values: Tensor) -> Tensor:
        """``values.T @ X`` (K, G) for (D, K) ``values``, by blocks."""
        x = self.get("x", values.dtype)
        result = values.new_zeros(values.shape[1], x.shape[1])
        for rows, cols in self.x_blocks:
            if cols.stop > cols.start:
                result[:, cols] += (x[rows, cols].t() @ values[rows]).t()
        return result

    def get(self, name: str, dtype: torch.dtype) -> Tensor:
        """One of the per-batch tensors above, in ``dtype``."""
        if dtype == self._work:
            return self._sums[name]
        if (name, dtype) not in self._cast:
            self._cast[name, dtype] = self._sums[name].to(dtype)
        return self._cast[name, dtype]

    def chunks(self) -> list[tuple[slice, slice]]:
        """(atoms, edges) slices of whole atoms, about CHUNK_EDGES edges each, or one
        slice (see :func:`_chunked`)."""
        if self._chunks is None:
            starts = self.src_starts.tolist() + [len(self.src)]
            if not _chunked(self.src.device):
                bounds = [0, self.n_atoms]
            elif self.dense:  # M edges per atom
                per = max(1, CHUNK_EDGES // max(1, starts[-1] // max(1, self.n_atoms)))
                bounds = list(range(0, self.n_atoms, per)) + [self.n_atoms]
            else:
                bounds = [0]
                for atom in range(1, self.n_atoms + 1):
                    if starts[atom] - starts[bounds[-1]] >= CHUNK_EDGES \
                            or atom == self.n_atoms:
                        bounds.append(atom)
            self._chunks = [(slice(lo, hi), slice(starts[lo], starts[hi]))
                            for lo, hi in zip(bounds, bounds[1:])]
        return self._chunks

    def sum_per_centre(self, values: Tensor, atoms: slice, edges: slice) -> Tensor:
        """A chunk's (e, K) edge values summed per centre atom -> (atoms, K)."""
        n = atoms.stop - atoms.start
        if self.dense:
            return values.reshape(n, -1, values.shape[1]).sum(dim=1)
        local = self.src[edges] - atoms.start
        return values.new_zeros(n, values.shape[1]).index_add_(0, local, values)

    def per_edge(self, values: Tensor, atoms: slice, edges: slice) -> Tensor:
        """A chunk's per-atom (N, K) ``values`` for each of its edges: (atoms, 1, K),
        to broadcast over an atom's M edges, or (e, K)."""
        if self.dense:
            return values[atoms].unsqueeze(1)
        return values.index_select(0, self.src[edges])

    def nbr_sum(self, rows: Tensor) -> Tensor:
        """Per atom i, the sum of ``rows[dst_e]`` over its edges e -> (N, K)."""
        if self.dense:
            return fn.embedding_bag(self.dst.view(self.n_atoms, -1), rows, mode="sum")
        return fn.embedding_bag(self.dst, rows, self.src_starts, mode="sum")

    def centre_sum_per_nbr(self, rows: Tensor) -> Tensor:
        """Per atom j, the sum over the edges e with ``dst_e = j`` of
        ``p_e rows[src_e]`` -> (N, K)."""
        return fn.embedding_bag(self.nbr_centres, rows, self.nbr_starts, mode="sum",
                                per_sample_weights=self.get("nbr_centre_share", rows.dtype))


class _GatedEdgeConv(torch.autograd.Function):
    @staticmethod
    @_without_autocast
    def forward(ctx, self_rows, nbr_rows, w_dist, gamma, beta, eps, groups):
        dtype = nbr_rows.dtype
        stat = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        get = groups.get
        n = groups.n_atoms
        p_s, p_a = get("centre_share", stat), get("nbr_share", stat)
        big_s, big_a, w_u = self_rows.to(stat), nbr_rows.to(stat), w_dist.to(stat)
        mean_s, mean_a, mean_t = p_s @ big_s, p_a @ big_a, w_u @ get("x_mean", stat)
        s, a = big_s - mean_s, big_a - mean_a     # centred tables; t = Xc W_u^T
        # sum over each atom's edges of (a[dst] + t[dist]), and over each atom's
        # in-edges of p_e t[dist]
        per_centre = groups.nbr_sum(a) + get("centre_x", stat) @ w_u.t()   # (N, K)
        nbr_dist = get("nbr_x", stat) @ w_u.t()                            # (N, K)
        var = (p_s @ (s * s) + p_a @ (a * a) + ((w_u @ get("x_cov", stat)) * w_u).sum(1)
               + 2.0 * (get("atom_share", stat) @ (s * per_centre))
               + 2.0 * (a * nbr_dist).sum(dim=0)).clamp_(min=0.0)
        inv = torch.rsqrt(var + eps)
        alpha = inv if gamma is None else inv * gamma.to(stat)
        shift = 0.0 if beta is None else beta.to(stat)
        rows = torch.empty(2 * n + groups.n_dist, s.shape[1], dtype=dtype, device=s.device)
        # t rows = Xc (alpha W_u)^T = X (alpha W_u)^T - xmean (alpha W_u)^T: the constant
        # goes into the centre rows (one per edge), X keeps its zeros
        scaled_w = w_u * alpha.unsqueeze(1)
        rows[:n] = s * alpha + (shift - scaled_w @ get("x_mean", stat))
        rows[n:2 * n] = a * alpha
        if dtype == stat:
            groups.x_times(scaled_w, rows[2 * n:])
        else:
            rows[2 * n:] = groups.x_times(scaled_w, torch.empty_like(rows[2 * n:], dtype=stat))
        # the normalised edges y = rows summed per edge, and the gate on them, by chunks
        f = s.shape[1] // 2
        n_edges = len(groups.src)
        # for the backward, per edge: d message / d y_filter = core sigmoid'(y_filter)
        # and d message / d y_core = gate sigmoid(y_core) (softplus' = sigmoid)
        d_gate = rows.new_empty(n_edges, 2 * f)  # [d / d y_filter, d / d y_core]
        summed = rows.new_empty(n, f)
        for atoms, edges in groups.chunks():
            y = fn.embedding_bag(groups.bags[edges], rows, mode="sum")
            gate = torch.sigmoid(y[:, :f])
            core = fn.softplus(y[:, f:])
            torch.mul(gate, torch.sigmoid(y[:, f:]), out=d_gate[edges, f:])
            torch.ops.aten.sigmoid_backward.grad_input(core, gate,
                                                       grad_input=d_gate[edges, :f])
            message = torch.mul(gate, core, out=core)
            summed[atoms] = groups.sum_per_centre(message, atoms, edges)
        ctx.save_for_backward(s, a, w_u, per_centre, nbr_dist, inv, alpha, d_gate)
        ctx.groups = groups
        ctx.kinds = (self_rows.dtype, nbr_rows.dtype, w_dist.dtype,
                     None if gamma is None else gamma.dtype,
                     None if beta is None else beta.dtype)
        mean = mean_s + mean_a + mean_t
        ctx.mark_non_differentiable(mean, var)
        return summed, mean, var

    @staticmethod
    @once_differentiable
    @_without_autocast
    def backward(ctx, grad, _mean, _var):
        s, a, w_u, per_centre, nbr_dist, inv, alpha, d_gate = ctx.saved_tensors
        groups = ctx.groups
        get = groups.get
        stat, dtype = s.dtype, d_gate.dtype
        width = d_gate.shape[1]
        grad = grad.to(dtype).repeat(1, 2)           # the sum's gradient, for both halves
        # the gradient of y: summed per centre and per neighbour, and per distance
        g_s = d_gate.new_empty(groups.n_atoms, width)
        g_a = d_gate.new_zeros(groups.n_atoms, width)
        g_t = d_gate.new_zeros(groups.n_dist, width)
        for atoms, edges in groups.chunks():
            per_edge = groups.per_edge(grad, atoms, edges)   # (atoms, 1, 2F) or (e, 2F)
            shape = (atoms.stop - atoms.start, -1, width) if per_edge.dim() == 3 \
                else (-1, width)
            g_y = torch.mul(per_edge, d_gate[edges].view(shape)).view(-1, width)
            g_s[atoms] = groups.sum_per_centre(g_y, atoms, edges)
            g_a.index_add_(0, groups.dst[edges], g_y)
            g_t.index_add_(0, groups.inverse[edges], g_y)
        g_s, g_a = g_s.to(stat), g_a.to(stat)
        g_x = groups.times_x(g_t.to(stat))                         # sum_e dy_e X_e
        del g_t
        p_s, p_a = get("centre_share", stat), get("nbr_share", stat)
        atom_share = get("atom_share", stat).unsqueeze(1)
        grad_sum = g_s.sum(dim=0)                                        # sum dy
        g_x -= torch.outer(grad_sum, get("x_mean", stat))               # sum dy_e Xc_e
        grad_xhat = ((g_s * s).sum(dim=0) + (g_a * a).sum(dim=0)
                     + (g_x * w_u).sum(dim=1)) * inv                     # sum dy xhat
        # dz_e = alpha (dy_e - p_e (sum dy + xhat_e sum dy xhat)), summed per table row
        # (xhat_e = inv (s[src] + a[dst] + t[dist])), and for the distance table taken
        # through t = Xc W_u^T to W_u
        shift = alpha * grad_sum
        slope_x = alpha * inv * grad_xhat
        d_s = alpha * g_s - p_s.unsqueeze(1) * (shift + slope_x * s) \
            - slope_x * (atom_share * per_centre)
        d_a = alpha * g_a - p_a.unsqueeze(1) * (shift + slope_x * a) \
            - slope_x * (groups.centre_sum_per_nbr(s) + nbr_dist)
        spread = (w_u @ get("x_cov", stat) + (get("centre_share_x", stat).t() @ s).t()
                  + (get("nbr_x", stat).t() @ a).t())
        d_w = alpha.unsqueeze(1) * g_x - slope_x.unsqueeze(1) * spread
        self_dtype, nbr_dtype, w_dtype, gamma_dtype, beta_dtype = ctx.kinds
        return (d_s.to(self_dtype), d_a.to(nbr_dtype), d_w.to(w_dtype),
                None if gamma_dtype is None else grad_xhat.to(gamma_dtype),
                None if beta_dtype is None else grad_sum.to(beta_dtype), None, None)


def gated_edge_conv(self_rows: Tensor, nbr_rows: Tensor, w_dist: Tensor,
                    groups: EdgeGroups, gamma: Tensor | None, beta: Tensor | None,
                    eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """The gated convolution's edge part with ``bn1`` on batch statistics:
    ``y = BN(z)`` over the edges of ``z = self_rows[src] + nbr_rows[dst] +
    X[inverse] w_dist^T`` (``X``: ``groups``' expanded distances), each edge weighted
    by its centre atom's weight, then ``sum over each atom's edges of
    sigmoid(y[:, :F]) * softplus(y[:, F:])``.

    Returns the (N, F) sums and ``bn1``'s weighted batch mean and biased variance
    (2F,), for its running statistics."""
    return _GatedEdgeConv.apply(self_rows, nbr_rows, w_dist, gamma, beta, eps, groups)
