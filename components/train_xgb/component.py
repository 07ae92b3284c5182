"""KFP v2 container component of the ``train-xgb`` stage, built from its spec (``spec.py``)."""

from components.train_xgb.spec import SPEC


def build(image: str):
    """The ``train-xgb`` container component running in ``image`` (a full image reference)."""
    return SPEC.component(image)
