"""robustlens: what do adversarially robust image classifiers look at?

Compare a standard (STD) and an adversarially trained (ADV) classifier side by side:
training, attacks, saliency, feature visualisation, input-transformation probes,
cue-conflict bias, neuron analysis, late-fusion transfer and robust / non-robust data sets.

Contract shared by every part: images are float tensors in [0, 1], NCHW; every model
puts its own input normalisation first, so attacks and saliency work in pixel space.
"""

__version__ = "0.1.0"

from robustlens.errors import UserError  # noqa: E402

__all__ = ["UserError", "__version__"]
