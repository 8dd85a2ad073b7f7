"""The names of every family's members, in one torch-free module.

The spec checker (:mod:`robustlens.study.spec`) and the command line validate names against
these tuples without importing torch; each family's :class:`~robustlens.registry.Registry`
registers exactly these names (``tests/test_registry.py`` checks both directions). A new
member is added here and registered in its family's module.
"""

from __future__ import annotations

# robustlens.attacks.ATTACKS
ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square", "autoattack")
# members of the AutoAttack-style ensemble (robustlens.attacks.autoattack)
ENSEMBLE_MEMBERS: tuple[str, ...] = ("apgd-ce", "apgd-t", "apgd-dlr", "fab", "fab-t", "square")
# AutoAttack's versions, named as its authors name them (robustlens.attacks.autoattack)
AUTOATTACK_VERSIONS: tuple[str, ...] = ("standard", "plus", "rand", "custom")

# robustlens.train: training modes
TRAIN_MODES: tuple[str, ...] = ("std", "fgsm", "fgsm-rs", "pgd", "trades")

# robustlens.explain.saliency.METHODS
SALIENCY_METHODS: tuple[str, ...] = ("vanilla", "loss", "guided", "smoothgrad", "ig", "ig_path_average", "gradcam",
                                     "input_x_gradient", "gradient_shap", "deeplift", "occlusion", "smoothgrad_sq", "vargrad")

# robustlens.probes.transforms.PROBES
PROBES: tuple[str, ...] = ("blur", "median", "invert", "greyscale", "lowpass", "highpass", "silhouette", "edges", "stylize")

# robustlens.data.formats.READERS
FORMATS: tuple[str, ...] = ("folder", "archive", "cifar", "idx", "svhn", "stl10", "tinyimagenet", "imagenet")

# the study's opt-in stages
TRANSFER_VARIANTS: tuple[str, ...] = ("std", "adv", "std+std", "adv+adv", "std+adv")
CONSTRUCT_KINDS: tuple[str, ...] = ("robust", "det", "rand")

# robustlens.data: evaluation preprocessing of an image before the model sees it
# ("squash": resize both sides to the spec's size; "res256crop224": RobustBench's
# Res256Crop224, the shorter side to 256 then a centre crop of 224, the ImageNet evaluation)
PREPROCESSING: tuple[str, ...] = ("squash", "res256crop224")

# robustlens.models.catalogue: published models a user names as NAME@PATH (study spec
# ``checkpoint``, ``--checkpoint``, ``robustlens models --import NAME --file PATH``)
CATALOGUE: tuple[str, ...] = (
    "cifar10/Linf/Standard", "cifar10/Linf/Wong2020Fast", "cifar10/Linf/Engstrom2019Robustness",
    "cifar10/Linf/Zhang2019Theoretically", "cifar10/Linf/Jia2022LAS-AT_70_16",
    "imagenet/none/resnet50", "imagenet/none/alexnet",
    "imagenet/Linf/Engstrom2019Robustness", "imagenet/Linf/Engstrom2019Robustness_8_255",
    "imagenet/L2/Engstrom2019Robustness", "imagenet/Linf/Salman2020Do_R50",
)
