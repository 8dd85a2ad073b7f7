"""robustlens.explain: what do the models look at?

* :mod:`~robustlens.explain.saliency`: ``saliency(model, images, target, method)`` for
  vanilla, loss, guided, smoothgrad, ig, ig_path_average, gradcam (one signature).
* :mod:`~robustlens.explain.render`: the paper's display (3-std clipping), overlays, grids.
* :mod:`~robustlens.explain.featvis`: first-layer filters, channel visualisation.
* :mod:`~robustlens.explain.sanity`: parameter-randomisation sanity checks.
* :mod:`~robustlens.explain.localize`: boxes from maps, IoU, pointing game.
* :mod:`~robustlens.explain.generate`: large targeted L2 perturbations, perceptual alignment.
"""

from robustlens.explain.saliency import (
    METHODS,
    grad_cam,
    guided_backprop,
    ig_path_average,
    integrated_gradients,
    loss_gradient,
    saliency,
    smoothgrad,
    vanilla_gradient,
)

__all__ = [
    "METHODS",
    "grad_cam",
    "guided_backprop",
    "ig_path_average",
    "integrated_gradients",
    "loss_gradient",
    "saliency",
    "smoothgrad",
    "vanilla_gradient",
]
