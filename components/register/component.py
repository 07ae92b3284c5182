"""KFP v2 container component of the ``register`` stage, built from its spec (``spec.py``)."""

from components.register.spec import SPEC


def build(image: str):
    """The ``register`` container component running in ``image`` (a full image reference)."""
    return SPEC.component(image)
