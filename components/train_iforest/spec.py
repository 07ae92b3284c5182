"""``train-iforest``'s parameters, input and outputs (``components.contracts.spec``): the
hyperparameters' names, types and defaults are ``IForestParams``' own (``logic.py``)."""

from components.contracts.spec import StageSpec, params_from
from components.contracts.training import training_io
from components.train_iforest.logic import IForestParams

SPEC = StageSpec(
    module="train_iforest",
    summary="Train the unsupervised isolation forest (novel, unlabelled patterns).",
    **training_io("forest.npz (plain arrays, no pickle), iforest.skops and meta.json"),
    params=params_from(
        IForestParams,
        {
            "n_estimators": "Number of isolation trees.",
            "max_samples": "Rows sampled to grow each tree (capped at the training rows).",
            "seed": "Random seed.",
        },
    ),
    executor_input=True,
)
