"""KFP v2 container component of the ``evaluate`` stage, built from its spec (``spec.py``)."""

from components.evaluate.spec import SPEC


def build(image: str):
    """The ``evaluate`` container component running in ``image`` (a full image reference)."""
    return SPEC.component(image)
