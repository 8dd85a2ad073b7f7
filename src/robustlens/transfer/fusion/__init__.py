"""Late fusion of pre-trained backbones (Itazuri et al. 2019, Sec. 4.2 and Fig. 9).

Two pre-trained classifiers (standard, STD, or adversarially trained, ADV) are merged in
the last layer: their penultimate features are concatenated and fed to a new linear head
that is trained on a target data set. Variants: STD, ADV (one backbone), STD+STD, ADV+ADV
(two backbones of the same kind, trained with different seeds) and STD+ADV. The paper
fine-tunes everything for 30 epochs at lr 0.001 (SGD, momentum 0.9); a linear probe
(frozen backbones, new head only) is offered as the fast path: its features are computed
once per backbone and target, then shared by every variant and repeat.

The paper's claim: ADV+ADV wins on low-resolution data sets, STD+STD on high-resolution
ones, and STD+ADV is close to the best everywhere.

Modules: ``model`` (:class:`LateFusion`), ``variants`` (the ``KIND+KIND`` grammar), ``inputs``
(backbones and targets, and their checks), ``fit`` (linear probe and fine-tuning), ``study``
(:func:`run_fusion_study`), ``pattern`` (the paper's pattern in a table), ``report`` (tables,
plot, files).
"""

from robustlens.transfer.fusion.fit import (
    LINEAR_EPOCHS,
    LINEAR_LR,
    PAPER_EPOCHS,
    PAPER_LR,
    compute_features,
    fit_finetune,
    fit_linear_head,
    new_head,
)
from robustlens.transfer.fusion.inputs import Backbone, Target, check_backbones, check_target, load_backbone, load_target
from robustlens.transfer.fusion.model import LateFusion
from robustlens.transfer.fusion.pattern import best_variant, gap_to_best, mean_table, paper_pattern, within_best
from robustlens.transfer.fusion.report import plot_fusion, table_csv, table_markdown, write_outputs
from robustlens.transfer.fusion.study import FitSettings, RunResult, run_fusion_study, summarise
from robustlens.transfer.fusion.variants import DEFAULT_VARIANTS, check_variants, parse_variants, variant_members

__all__ = [
    "DEFAULT_VARIANTS",
    "LINEAR_EPOCHS",
    "LINEAR_LR",
    "PAPER_EPOCHS",
    "PAPER_LR",
    "Backbone",
    "FitSettings",
    "LateFusion",
    "RunResult",
    "Target",
    "best_variant",
    "check_backbones",
    "check_target",
    "check_variants",
    "compute_features",
    "fit_finetune",
    "fit_linear_head",
    "gap_to_best",
    "load_backbone",
    "load_target",
    "mean_table",
    "new_head",
    "paper_pattern",
    "parse_variants",
    "plot_fusion",
    "run_fusion_study",
    "summarise",
    "table_csv",
    "table_markdown",
    "variant_members",
    "within_best",
    "write_outputs",
]
