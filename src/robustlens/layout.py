"""Memory layout of the models robustlens owns: channels_last where it was measured to win.

A convolution in NHWC ("channels_last") order runs oneDNN's blocked kernels on CPU and cuDNN's
tensor-core kernels on CUDA without the NCHW <-> NHWC reorders around every layer; it pays off
only when the *weights* are converted too (input-only channels_last measured 0.93x, BENCHMARKS.md
"Attacks"). The arithmetic is the same up to the order of the float additions, so logits agree
to ~1e-7 relative; an attack's iterates can still part where a max-pool window holds a near-tie
or a gradient coordinate is ~0 (the sign step amplifies a rounding difference), as any change of
kernel does (BENCHMARKS.md: 94.9% of PGD-10 images identical to 1e-5 on the small CNN).

Where robustlens owns the model it calls :func:`fast_layout`: models trained by
:func:`robustlens.train.train` (``TrainConfig.channels_last``), checkpoints loaded by the study
(``study/stages/context.load_model``) and by the command-line tools (``cli_common.load_model``).
A caller's own model handed to a library function (``robust_accuracy``, ``pgd``, a saliency
method) is never converted; :func:`match_layout` only brings an *input* into the layout the
model already has, so the first convolution does not reorder it.

Measured decision table (``python benchmarks/bench_floors.py --section layout``; one process,
contiguous and channels_last copies of the same eval-mode model interleaved, 5 rounds, median
speed of channels_last over contiguous; 2-core AMD EPYC (AVX2), torch 2.13 CPU, 2 threads,
machine shared with other sessions):

=================  =====  =====  ============================  =====================  ========
arch               size   batch  PGD step (forward + input      forward (no grad)      decision
                                 gradient)
=================  =====  =====  ============================  =====================  ========
small_cnn w16      32     256    1.41x; 1 thread 1.16x          1.55x; 1.68x           channels_last
small_cnn w32      32     256    1.48x                          1.52x                  channels_last
preact_resnet18    32     32     1.31x; 1 thread 1.22x          1.09x; 1.07x           channels_last
wrn16_4            32     64     1.32x; 1 thread 1.09x          1.07x                  channels_last
resnet18           96     16     0.96x, 1.13x; 1 thread 1.12x   1.43x, 1.48x; 0.98x    channels_last
resnet50           96     8      0.77x, 1.31x; 1 thread 1.33x   1.16x (1 thread)       channels_last
=================  =====  =====  ============================  =====================  ========

(Two figures: two separate runs. The first ResNet runs, 0.96x and 0.77x, had rounds spread over
0.56-1.96x on the loaded machine; the two later runs at 2 and 1 threads both gave a win.)

The attacks, saliency and probes are gradient work (the middle column), so that column decides.
An architecture not in the table (ResNet-101, WRN-28-10, AlexNet, the CIFAR ResNet-50 of the
zoo) stays contiguous on CPU until it is measured.

CUDA: not measured in any session so far (no GPU lent). Training already runs channels_last on
CUDA (NVIDIA's guidance for cuDNN with bf16 / TF32 tensor cores), so loaded models follow it
there; ``benchmarks/gpu/run.sh`` is the place to measure it. Any other device: contiguous.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: architectures for which channels_last measured faster on CPU (the table above)
CPU_CHANNELS_LAST = frozenset({"small_cnn", "preact_resnet18", "wrn16_4", "resnet18", "resnet50"})


def wins(arch: str, device: torch.device | str) -> bool:
    """Whether channels_last is the faster layout for ``arch`` on ``device`` (the module's table)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(arch)
    return kind == "cpu" and arch in CPU_CHANNELS_LAST


def fast_layout(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` (one robustlens owns: trained or loaded by it) in its fastest measured layout on
    ``device``, converted in place and returned. A model without a registered ``arch`` (not an
    :class:`~robustlens.models.base.ImageClassifier`) is left as it is."""
    from robustlens.models.base import ImageClassifier

    if isinstance(model, ImageClassifier) and wins(model.arch, device):
        model.to(memory_format=torch.channels_last)
    return model


def is_channels_last(model: nn.Module) -> bool:
    """Whether the model's first 4-D weight (its first convolution) is stored channels_last."""
    for p in model.parameters():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def match_layout(x: Tensor, model: nn.Module) -> Tensor:
    """A batch of images ``x`` (N, C, H, W) in the layout of ``model``'s weights (a no-op when it
    is already, or when the model is contiguous); the values are unchanged."""
    if x.dim() == 4 and is_channels_last(model):
        return x.contiguous(memory_format=torch.channels_last)
    return x
