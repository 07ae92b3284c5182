"""KFP v2 container component of the ``datagen`` stage, built from its spec (``spec.py``)."""

from components.datagen.spec import SPEC


def build(image: str):
    """The ``datagen`` container component running in ``image`` (a full image reference)."""
    return SPEC.component(image)
