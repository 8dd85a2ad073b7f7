"""Are robust features useful? Late fusion (Itazuri et al. 2019, Sec. 4.2) and the robust /
non-robust data sets of Ilyas et al. (2019).

    from robustlens.transfer import LateFusion, run_fusion_study, construct_dataset
    res = run_fusion_study({"std": [s0, s1], "adv": [a0, a1]}, [("trifeature", 32), ("trifeature", 96)],
                           "std,adv,std+std,adv+adv,std+adv", repeats=3, mode="linear", out_dir="runs/fusion")
    d_r = construct_dataset(adv_model, train_set, "robust", out_dir="runs/d_r", n=2000)
"""

from robustlens.transfer.construct import (
    ConstructedSet,
    construct_dataset,
    invert_representation,
    load_constructed,
    targeted_perturbation,
    train_and_evaluate,
)
from robustlens.transfer.fusion import (
    LateFusion,
    Target,
    compute_features,
    fit_linear_head,
    parse_variants,
    plot_fusion,
    run_fusion_study,
    table_markdown,
)

__all__ = [
    "ConstructedSet",
    "LateFusion",
    "Target",
    "compute_features",
    "construct_dataset",
    "fit_linear_head",
    "invert_representation",
    "load_constructed",
    "parse_variants",
    "plot_fusion",
    "run_fusion_study",
    "table_markdown",
    "targeted_perturbation",
    "train_and_evaluate",
]
