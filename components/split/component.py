"""KFP v2 container component of the ``split`` stage, built from its spec (``spec.py``)."""

from components.split.spec import SPEC


def build(image: str):
    """The ``split`` container component running in ``image`` (a full image reference)."""
    return SPEC.component(image)
