"""Model zoo: every model takes [0, 1] images and normalises them itself."""

from robustlens.models.base import ImageClassifier, Normalize
from robustlens.models.zoo import available, create, register

__all__ = ["ImageClassifier", "Normalize", "available", "create", "register"]
