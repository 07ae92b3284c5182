"""KFP v2 container component of the ``train-iforest`` stage, built from its spec (``spec.py``)."""

from components.train_iforest.spec import SPEC


def build(image: str):
    """The ``train-iforest`` container component running in ``image`` (a full image reference)."""
    return SPEC.component(image)
