"""CGCNNRegressor: CGCNN regression behind skorch's NeuralNetRegressor."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetRegressor

from .._targets import check_finite_targets
from ..model import CGCNN
from ._base import DEFAULT_MOMENTUM, _CGCNNMixin
from ._docstrings import _COMMON_DOC
from ._checks import _graph_params_of
from ._data import collate_graphs
from ._domain import _DomainHooks
from ._init_model import clone_sharing_init, prepare as _prepare_finetune
from ._recipe import LOSSES, mean_and_variance

__all__ = ["CGCNNRegressor"]


class CGCNNRegressor(_DomainHooks, _CGCNNMixin, NeuralNetRegressor):
    __doc__ = ("""CGCNN regression as a scikit-learn estimator (a skorch NeuralNetRegressor).

    X is the :class:`~skcgcnn.graph.GraphCollection` made by
    :class:`~skcgcnn.transformers.StructureGraphTransformer`; y is 1-D or 2-D
    (several targets).  Targets are standardised with a scikit-learn
    ``StandardScaler`` fitted on the rows passed to ``fit`` (the original CGCNN fitted
    its normaliser on a sample that included the test set); the loss (``loss``) is taken
    in standardised units and ``predict`` answers in the original units (with
    ``module__pooling="sum"``, for extensive targets, they are divided by their standard
    deviation only, not shifted).  The default recipe is
    :data:`~skcgcnn.estimators.DEFAULT_RECIPE`; the original ``main.py`` one is
    ``CGCNNRegressor(**ORIGINAL_RECIPE)``.
""" + _COMMON_DOC + """    loss : {"squared_error", "absolute_error", "huber", "gaussian_nll"}, \
default="absolute_error"
        The loss on standardised targets: MSE (the original's), L1, Huber
        (``criterion__delta``, default 1.0, in standard deviations) or the Gaussian
        negative log-likelihood.  ``"gaussian_nll"`` gives the network a mean-variance
        head: two outputs per target, the mean and ``softplus(raw) + 1e-6`` as the
        variance (in standardised units), trained with torch's ``GaussianNLLLoss``;
        ``predict(X, return_std=True)`` then also answers the predicted (aleatoric)
        standard deviation.
    criterion : torch loss class or None, default=None
        None: the criterion of ``loss``.  Another torch loss (with
        ``loss="squared_error"``) replaces it.
    domain : {None, "knn"} or ApplicabilityDomain, default=None
        Fit an applicability domain on the training crystals' embeddings after
        ``fit`` (``domain_``); ``predict`` then warns (``OutsideDomainWarning``) about
        crystals outside it, and ``predict(X, return_domain=True)`` also answers each
        crystal's distance (see :class:`~skcgcnn.ApplicabilityDomain`).
    init : CGCNNRegressor, CGCNNClassifier, Pipeline, str, path or None, default=None
        Fine-tune a fitted model: an estimator, a Pipeline, the name of a pretrained model
        shipped with skcgcnn (``"mp-formation-energy"``, see
        :func:`skcgcnn.list_pretrained`) or the path of one saved with
        :func:`skcgcnn.save_model`.  ``fit``
        builds the network with its module arguments (``atom_fea_len``, ``n_conv``,
        ``h_fea_len``, ``n_h``, ``conv``, ...: they win over ``module__*``; ``pooling``,
        ``dropout`` and ``n_out`` stay this estimator's), copies its weights in except
        the output layer ``fc_out``, which starts afresh for the new targets (their
        number, or a variance head, may differ), and trains from there.  X must be built
        with the pretrained model's graph settings and atom features
        (``StructureGraphTransformer(**init.graph_params_)`` with its table;
        :func:`skcgcnn.pretrained.finetune_pipeline` builds that Pipeline), else a
        ValueError names what differs.  A fitted ``init`` is shared by ``clone``, not
        copied.
    freeze : {None, "embedding", "conv"}, default=None
        With ``init``: "embedding" freezes the atom embedding layer; "conv" the embedding
        and every convolution.  Frozen parameters get no gradient and stay out of the
        optimiser (bit for bit as pretrained after ``fit``), and their batch norms stay
        in eval mode while training, so their running statistics do not move.
    init_lr_factor : float, default=1.0
        With ``init``: the pretrained body's learning rate is ``lr * init_lr_factor``
        (through the schedule); the new output layer keeps ``lr``.

    Attributes
    ----------
    module_ : CGCNN
    target_scaler_ : sklearn.preprocessing.StandardScaler
    module_kwargs_ : dict
        Module arguments taken from the data (and, with ``init``, the pretrained
        network's).
    graph_params_ : dict
        ``radius``, ``max_num_nbr``, ``dmin``, ``step`` and the atom features of the
        graphs seen by ``fit``; ``predict`` refuses graphs built otherwise.
    n_outputs_ : int
    history_ : skorch History (also ``history``)
    domain_ : ApplicabilityDomain
        Only with ``domain``: fitted on the embeddings of the rows passed to ``fit``.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcgcnn import StructureGraphTransformer, CGCNNRegressor
    >>> pipe = make_pipeline(StructureGraphTransformer(), CGCNNRegressor(max_epochs=50))
    >>> pipe.fit(structures, formation_energies)          # doctest: +SKIP
    >>> pipe.predict(new_structures)                       # doctest: +SKIP

    References
    ----------
    T. Xie and J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018).
    """)

    def __init__(self, module=CGCNN, *, criterion=None,
                 optimizer="adamw", lr=0.01, max_epochs=50, batch_size=128,
                 train_split=None, iterator_train__shuffle=True,
                 iterator_train__collate_fn=collate_graphs,
                 iterator_valid__collate_fn=collate_graphs,
                 optimizer__momentum=DEFAULT_MOMENTUM, optimizer__weight_decay=0.01,
                 lr_schedule="onecycle",
                 warmup_fraction=0.1, loss="absolute_error", early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, random_state=None,
                 domain=None, init=None, freeze=None, init_lr_factor=1.0, device="cpu",
                 batch_on_device="auto", precision="float32", reduce_atoms=True,
                 verbose=1, **kwargs):
        super().__init__(module, criterion=criterion, optimizer=optimizer, lr=lr,
                         max_epochs=max_epochs, batch_size=batch_size,
                         train_split=train_split,
                         iterator_train__shuffle=iterator_train__shuffle,
                         iterator_train__collate_fn=iterator_train__collate_fn,
                         iterator_valid__collate_fn=iterator_valid__collate_fn,
                         optimizer__momentum=optimizer__momentum,
                         optimizer__weight_decay=optimizer__weight_decay, device=device,
                         verbose=verbose, **kwargs)
        self.lr_schedule = lr_schedule
        self.warmup_fraction = warmup_fraction
        self.loss = loss
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.domain = domain
        self.init = init
        self.freeze = freeze
        self.init_lr_factor = init_lr_factor
        self.batch_on_device = batch_on_device
        self.precision = precision
        self.reduce_atoms = reduce_atoms

    def __sklearn_clone__(self):
        """scikit-learn's clone; a fitted ``init`` is shared (its clone is unfitted)."""
        return clone_sharing_init(self, super().__sklearn_clone__)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y of shape (n, n_targets)
        return tags

    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit on graphs X and targets y of shape (n,) or (n, n_targets).

        ``sample_weight`` (one per crystal, >= 0) weighs each crystal's loss, scaled by
        the mean weight; rows of weight 0 are left out, equal weights change nothing.
        """
        X = self._check_X(X)
        y = self._check_y(X, y).astype(np.float64)
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
        check_finite_targets(y, X.ids)
        X, y, weights = self._take_sample_weight(X, y, sample_weight)
        self.y_ndim_ = y.ndim
        y2 = y.reshape(len(y), -1)
        self.n_outputs_ = y2.shape[1]
        self.target_scaler_ = StandardScaler().fit(y2)
        if self.get_params_for("module").get("pooling") == "sum":
            # an extensive target: scaled only, so that sums of per-atom terms scale
            # with the crystal (a shift would be added once per crystal, not per atom)
            self.target_scaler_.mean_ = np.zeros_like(self.target_scaler_.mean_)
        # a mean-variance head answers a mean and a (raw) variance per target
        heads = 2 if self.loss == "gaussian_nll" else 1
        self.module_kwargs_ = self._data_kwargs(X, heads * self.n_outputs_)
        # init: the pretrained body's module arguments, X checked against its graphs
        self.module_kwargs_ = _prepare_finetune(self, X, self.module_kwargs_)
        self.graph_params_ = _graph_params_of(X)
        self._fit_weighted(X, y2.astype(np.float32), weights, **fit_params)
        self._fit_domain(X)
        return self

    def initialize_criterion(self):
        """The criterion of ``loss`` (``criterion`` when one is given; ``MSELoss``, the
        default of estimators made before it was None, also stands for ``loss``)."""
        criterion = self.criterion
        if self.loss not in LOSSES:
            raise ValueError(f"CGCNNRegressor(loss={self.loss!r}): use one of {list(LOSSES)}")
        if criterion is None or criterion is torch.nn.MSELoss:
            criterion = LOSSES[self.loss]
        elif self.loss != "squared_error":
            raise ValueError(f"CGCNNRegressor got both criterion={criterion!r} and "
                             f"loss={self.loss!r}; give one of them")
        self.criterion_ = self.initialized_instance(criterion, self.get_params_for("criterion"))
        return self

    def _target_tensors(self, device):
        mean = torch.as_tensor(self.target_scaler_.mean_, dtype=torch.float32, device=device)
        scale = torch.as_tensor(self.target_scaler_.scale_, dtype=torch.float32,
                                device=device)
        return mean, scale

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = torch.as_tensor(y_true, device=y_pred.device, dtype=y_pred.dtype)
        mean, scale = self._target_tensors(y_pred.device)
        y_true = (y_true.reshape(len(y_pred), -1) - mean) / scale
        return super().get_loss(y_pred, y_true, X=X, training=training)

    def _has_variance_head(self) -> bool:
        """Whether the fitted network answers a variance beside each mean."""
        return self.module_kwargs_["n_out"] == 2 * self.n_outputs_

    def predict(self, X, return_std=False, return_domain=False):
        """Predictions in the original units: shape (n,) for 1-D y, else (n, n_targets).

        With ``return_std=True`` (a model fitted with ``loss="gaussian_nll"``), also
        the predicted standard deviation, of the same shape and in the same units:
        ``sqrt(var) * scale`` with ``scale`` the target scaler's.

        With a ``domain``, crystals outside it raise an ``OutsideDomainWarning``, and
        ``return_domain=True`` also answers each crystal's mean embedding distance to
        its nearest training crystals (inside when at or below
        ``domain_.threshold_``), last: ``(y_pred, distance)`` or
        ``(y_pred, y_std, distance)``.

        When X comes from a StructureGraphTransformer that skipped structures
        (``on_error="skip"``), there is one row per structure of its input, NaN for
        the skipped ones, so that a Pipeline's predictions stay aligned with its input.
        """
        self._require_fitted()
        variance = self._has_variance_head()
        if return_std and not variance:
            raise ValueError(
                f"predict(return_std=True) needs a variance head; this CGCNNRegressor was "
                f"fitted with loss={self.loss!r}, which predicts a mean only. Fit it with "
                "loss='gaussian_nll', or use CGCNNEnsembleRegressor for a spread over "
                "several networks")
        X = self._check_predict_X(X)
        k = self.n_outputs_
        if len(X) == 0 and getattr(X, "input_positions", None) is not None:
            out = std = np.zeros((0, k))  # every structure was skipped
        else:
            with self._resolved_device():
                scaled = super().predict_proba(X).reshape(len(X), -1)
            std = None
            if variance:
                mean, var = mean_and_variance(torch.from_numpy(scaled), k)
                scaled = mean.numpy()
                std = np.sqrt(var.numpy().astype(np.float64)) * self.target_scaler_.scale_
            out = self.target_scaler_.inverse_transform(scaled.astype(np.float64))
        out = self._align(X, out)
        out = out.ravel() if self.y_ndim_ == 1 else out
        if return_std:
            std = self._align(X, std)
            out = (out, std.ravel() if self.y_ndim_ == 1 else std)
        return self._predict_domain(X, out, return_domain)

    def score(self, X, y, sample_weight=None):
        """R² of ``predict(X)`` against ``y`` (scikit-learn's ``RegressorMixin.score``).

        Kept as an override for one reason: ``predict`` answers NaN for the
        structures a StructureGraphTransformer(on_error="skip") left out, and R² of
        NaN would fail with a message about NaN input; this names the skipped
        structures instead.
        """
        self._refuse_skipped(X, "score")
        return super().score(X, y, sample_weight=sample_weight)
