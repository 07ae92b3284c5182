"""The ``train-iforest`` stage's interface, declared once: the CLI, the KFP container
component (``component.py``), the pipeline defaults and the README table come from ``SPEC``.

The hyperparameter defaults are ``IForestParams``' own (``components/train_iforest/logic.py``).
"""

from components.contracts.spec import Param, StageSpec
from components.contracts.training import training_io
from components.train_iforest.logic import IForestParams as _D

SPEC = StageSpec(
    module="train_iforest",
    summary="Train the unsupervised isolation forest (novel, unlabelled patterns).",
    **training_io("forest.npz (plain arrays, no pickle), iforest.skops and meta.json"),
    params=(
        Param("n_estimators", int, _D.n_estimators, "Number of isolation trees."),
        Param(
            "max_samples",
            int,
            _D.max_samples,
            "Rows sampled to grow each tree (capped at the training rows).",
        ),
        Param("seed", int, _D.seed, "Random seed."),
    ),
    executor_input=True,
)
