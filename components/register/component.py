"""KFP v2 container component for the ``register`` stage (``python -m components.register``).

MLflow locations are infrastructure: they reach the container as environment variables
(``MLFLOW_TRACKING_URI``, ``MLFLOW_ARTIFACT_LOCATION``, ``MODEL_NAME``, ``CHAMPION_ALIAS``,
S3 endpoint), set on the task by the pipeline at compile time or by the local runner.

A rejected model is not an error of the pipeline by default (the decision artifact records
it); ``fail_on_reject=True`` makes the task, and so the run, fail on a rejection.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output


def build(image: str):
    """Return the ``register`` container component that runs in ``image``.

    Args:
        image: Full image reference, e.g. ``ghcr.io/cashier-integrity/register:latest``.
    """

    @dsl.container_component
    def register(
        xgb_model: Input[Model],
        iforest_model: Input[Model],
        evaluation: Input[Artifact],
        profiles: Input[Dataset],
        bundle: Output[Model],
        decision: Output[Artifact],
        min_pr_auc: float = 0.5,
        min_recall_at_1pct_fpr: float = 0.6,
        max_regression: float = 0.02,
        fail_on_reject: bool = False,
    ):
        """Build the serving bundle, register it in MLflow and gate the ``champion`` alias.

        Args:
            xgb_model: Model folder from ``train-xgb``.
            iforest_model: Model folder from ``train-iforest``.
            evaluation: Evaluation folder from ``evaluate`` (blend, thresholds, metrics).
            profiles: Cashier profile table from ``features``.
            min_pr_auc: Minimum test PR-AUC for the new model to become champion.
            min_recall_at_1pct_fpr: Minimum recall at 1% false-positive rate.
            max_regression: Largest allowed PR-AUC drop against the current champion.
            fail_on_reject: Fail the task (and the run) when the gate rejects the model.

        Returns:
            bundle: Output serving bundle folder (manifest with sha256 of every file).
            decision: Output JSON: registered model version, gate results and whether the
                ``champion`` alias moved.
        """
        return dsl.ContainerSpec(
            image=image,
            command=["python", "-m", "components.register"],
            args=[
                "--in-xgb-model", xgb_model.path,
                "--in-iforest-model", iforest_model.path,
                "--in-evaluation", evaluation.path,
                "--in-profiles", profiles.path,
                "--out-bundle", bundle.path,
                "--out-decision", decision.path,
                "--min-pr-auc", min_pr_auc,
                "--min-recall-at-1pct-fpr", min_recall_at_1pct_fpr,
                "--max-regression", max_regression,
                "--fail-on-reject", fail_on_reject,
            ],
        )  # fmt: skip

    return register
