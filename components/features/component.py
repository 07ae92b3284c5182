"""KFP v2 container component of the ``features`` stage, built from its spec (``spec.py``)."""

from components.features.spec import SPEC


def build(image: str):
    """The ``features`` container component running in ``image`` (a full image reference)."""
    return SPEC.component(image)
