"""The parameters CGCNNRegressor and CGCNNClassifier share, for their docstrings."""

_COMMON_DOC = """
    Parameters
    ----------
    module : torch module class, default=skcgcnn.model.CGCNN
        Its data-dependent arguments (``orig_atom_fea_len``, ``n_out``, ``radius``,
        ``dmin``, ``step``) are set from the training data; the others are tunable
        as ``module__atom_fea_len`` (64), ``module__n_conv`` (3), ``module__h_fea_len``
        (128), ``module__n_h`` (1), ``module__conv`` ("gated" or "simple"),
        ``module__pooling`` ("mean", or "sum" for extensive targets) and
        ``module__kernel`` ("fused", the fast layer, or "reference", the paper's
        equation in plain torch with the same weights: to compare with, or to fall
        back on where the fused one breaks); see :class:`~skcgcnn.model.CGCNN`.
    max_epochs : int, default=50
    lr : float, default=0.01
        The peak of the "onecycle" and "cosine" schedules.
    batch_size : int, default=128
    optimizer : torch optimizer class or {"sgd", "adam", "adamw"}, default="adamw"
        SGD gets ``optimizer__momentum=0.9``; for optimizers without momentum that
        default is dropped.
    optimizer__weight_decay : float, default=0.01
        (AdamW's decoupled weight decay; the original SGD recipe has none.)
    train_split : callable or None, default=None
        skorch's validation split (e.g. ``skorch.dataset.ValidSplit(0.2)``); None
        trains on every row passed to ``fit`` (or, with ``early_stopping``, on all but
        ``validation_fraction`` of them).
    lr_schedule : {"multistep", "onecycle", "cosine"} or None, default="onecycle"
        The ``lr_scheduler`` callback. "multistep": the original's, per epoch
        (MultiStepLR, ``callbacks__lr_scheduler__milestones=[100]``, gamma 0.1);
        "onecycle": torch's OneCycleLR up to ``lr`` and down, per batch; "cosine": a
        linear warm-up to ``lr`` then a cosine decay to 0, per batch; None: a constant
        rate (or your own ``LRScheduler`` callback, which is refused beside a built-in one).
        The per-batch schedules span ``max_epochs`` of ``ceil(n_train / batch_size)``
        steps.
    warmup_fraction : float, default=0.1
        Share of the steps spent warming up ("onecycle" and "cosine").
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (skorch's ``ValidSplit``, seeded by
        an int ``random_state``; or use ``train_split`` when given), stop when the
        validation loss has not improved for ``n_iter_no_change`` epochs, and end with the
        weights of the best epoch (skorch's ``EarlyStopping(load_best=True)``, the
        ``early_stopping`` callback).
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    random_state : int, RandomState, Generator or None, default=None
        Seeds weight initialisation, shuffling and dropout inside ``fit`` (the global
        torch generator is restored afterwards).
    device : {"cpu", "cuda", "auto"} or None, default="cpu"
        "auto" takes the GPU when one is available.
    batch_on_device : {"auto", True, False}, default="auto"
        Where batches are made. True: the graphs (and targets and sample weights) are
        moved to ``device`` once per ``fit`` or ``predict`` call, and every batch is cut
        there by crystal index (:mod:`skcgcnn.estimators._device_batches`), the same
        batches as the host path, bit for bit; False: skorch's ``DataLoader`` with
        :func:`collate_graphs`, batches made with numpy on the host and then copied;
        "auto": True on CUDA, False on the CPU.  A custom ``iterator_*__collate_fn``,
        ``iterator_*`` class or dataset keeps the host path ("auto") or is refused (True).
        See docs/gpu.md.
    precision : {"float32", "bfloat16"}, default="float32"
        "bfloat16" runs the forward pass of training and prediction under
        ``torch.autocast(device_type, dtype=torch.bfloat16)`` (matrix products in bf16,
        weights and their updates in float32); the outputs, the loss and the
        predictions are float32.
    reduce_atoms : bool, default=True
        Batch one atom per class of equivalent atoms, each weighted by its class's size
        (:meth:`~skcgcnn.graph.GraphCollection.collate` with ``reduce=True``;
        :mod:`skcgcnn.graph._orbits`): the same predictions, losses and gradients as the
        full graphs up to float rounding, with about 2.2x fewer atoms and edges on
        Materials Project crystals.  Used where the network can weigh atoms:
        skcgcnn's CGCNN with ``module__kernel="fused"``, trained in one process; else
        (and with False) the batches hold the full graphs.
    compile : bool, default=False
        skorch's switch for ``torch.compile``: here the convolutions' edge computation is
        compiled in place (inductor, ``dynamic=True``; ``compile__mode`` and the like
        are passed on), falling back to eager execution, with a warning, where no C++
        compiler is found or compiling fails.  The first batch then takes tens of
        seconds; see docs/models.md for what it gains.
    verbose : int, default=1
        The epoch table (losses, scores, duration of each epoch) on standard error
        (:class:`~skcgcnn.estimators.EpochTable`, coloured only on a terminal); 0 for
        none.
    **kwargs
        Any other skorch ``NeuralNet`` argument (``callbacks``, ``iterator_train__*``,
        ``optimizer__betas``, ...).

    The defaults are :data:`~skcgcnn.estimators.DEFAULT_RECIPE` (measured in
    docs/benchmark.md); ``**ORIGINAL_RECIPE`` gives the original ``main.py`` recipe.
"""

