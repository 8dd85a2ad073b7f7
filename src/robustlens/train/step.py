"""One optimiser step of standard or adversarial training: the step every robustlens fit shares.

:func:`train` (``robustlens.train.loop``), the transfer fit (``transfer/_loops.sgd_fit``, which
also trains the constructed data sets of Ilyas et al. 2019) and the late-fusion linear probe
(``transfer/fusion``) each bring their own batches and bookkeeping, and hand every batch to
:func:`sgd_step`, configured by a :class:`Recipe`:

1. set the learning rate of every parameter group (a schedule is a pure function of the step);
2. the inner maximisation (Madry et al. 2018, Eq. 2.1): build ``x_adv`` from gradients w.r.t.
   the *input only* (``torch.autograd.grad(loss, x_adv)``), so no weight gradients are computed
   for the attack; FGSM-RS then costs about two standard steps (DESIGN: 1.85x small CNN);
3. the outer minimisation: one SGD step on the adversarial (or mixed) batch.

Modes: ``std``; ``fgsm`` (zero start, step eps: the main paper's ADV; Goodfellow et al. 2015);
``fgsm-rs`` (uniform random start, one step, projection: Wong et al. 2020, Alg. 3); ``pgd``
(k projected steps from a random start: Madry et al. 2018); ``trades`` (Zhang et al. 2019,
Eq. 5: ``CE(f(x), y) + beta * KL(f(x) || f(x'))``, ``x'`` maximising the KL by PGD-k from
``x + 0.001 N(0, 1)``, model in eval mode during the attack as in the authors' code).

Why :func:`perturb` is not :func:`robustlens.attacks.pgd`: a training step needs the logits of
the attack's first forward (FGSM's clean accuracy comes for free), bfloat16 autocast, and no
input validation per step; and it differentiates the batch-*mean* cross-entropy, where the
attack differentiates the per-example sum. The two directions agree up to rounding, not bit for
bit, so each keeps its own numbers. The per-epoch PGD check of :func:`train` uses the attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens.evalmode import eval_mode
from robustlens.threat import ThreatModel

#: modes whose inner maximisation is a single step
FGSM_MODES = ("fgsm", "fgsm-rs")


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on ``device`` when ``enabled`` (a no-op context otherwise)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


# --------------------------------------------------------------------------------------
# The inner maximisation (input gradients only)
# --------------------------------------------------------------------------------------


def perturb(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    mode: str,
    threat: ThreatModel,
    step_size: float,
    steps: int,
    generator: torch.Generator | None = None,
    amp: bool = False,
) -> tuple[Tensor, Tensor]:
    """Adversarial examples for training, and the logits of the attack's first forward.

    ``fgsm``: ``x + step * dir(grad L(x))`` (Goodfellow et al. 2015), start at ``x`` itself, so
    the first logits are the clean ones. ``fgsm-rs``: start uniform in the ball, one step,
    project (Wong et al. 2020). ``pgd``: ``steps`` projected steps from a random start
    (Madry et al. 2018). The model's train/eval mode is left as it is.
    """
    x_adv = x.clone() if mode == "fgsm" else threat.random_init(x, generator)
    n_steps = 1 if mode in FGSM_MODES else steps
    first = None
    for _ in range(n_steps):
        x_adv.requires_grad_(True)
        with autocast(x.device, amp):
            logits = model(x_adv)
            loss = F.cross_entropy(logits.float(), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        if first is None:
            first = logits.detach()
        x_adv = threat.project(threat.ascent_step(x_adv.detach(), grad, step_size), x)
    return x_adv.detach(), first


def perturb_trades(
    model: nn.Module,
    x: Tensor,
    threat: ThreatModel,
    step_size: float,
    steps: int,
    generator: torch.Generator | None = None,
    amp: bool = False,
) -> Tensor:
    """TRADES' inner maximisation: ``argmax_{x' in ball} KL(f(x) || f(x'))`` by PGD-k.

    Zhang et al. 2019, Alg. 1 / the authors' ``trades.py``: start at ``x + 0.001 N(0, I)``,
    sign steps on ``KL(softmax f(x) || softmax f(x'))`` (sum reduction), projected.
    """
    with torch.no_grad(), autocast(x.device, amp):
        p_clean = F.softmax(model(x).float(), dim=1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = threat.project(x + 0.001 * noise, x)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with autocast(x.device, amp):
            log_q = F.log_softmax(model(x_adv).float(), dim=1)
        loss = F.kl_div(log_q, p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = threat.project(threat.ascent_step(x_adv.detach(), grad, step_size), x)
    return x_adv.detach()


def grad_align_penalty(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel,
                       generator: torch.Generator | None = None, amp: bool = False) -> Tensor:
    """GradAlign's regulariser, ``E[1 - cos(grad_x L(x, y), grad_x L(x + eta, y))]`` with
    ``eta ~ U(ball)`` (clipped to [0, 1]): Andriushchenko & Flammarion 2020, Eq. 5.

    As the authors' ``train.py``: ``L`` is the batch-mean cross-entropy, the gradient at ``x``
    is a constant (no second-order term) and only the one at ``x + eta`` is differentiated
    (``create_graph``); examples with a zero gradient at either point are left out of the
    mean. Returns a scalar that back-propagates into the weights (0 when no example is left).
    """
    x1 = x.detach().clone().requires_grad_(True)
    with autocast(x.device, amp):
        loss1 = F.cross_entropy(model(x1).float(), y)
    (g1,) = torch.autograd.grad(loss1, x1)
    x2 = threat.random_init(x.detach(), generator).requires_grad_(True)
    with autocast(x.device, amp):
        loss2 = F.cross_entropy(model(x2).float(), y)
    (g2,) = torch.autograd.grad(loss2, x2, create_graph=True)
    g1, g2 = g1.flatten(1).float(), g2.flatten(1).float()
    n1, n2 = g1.norm(dim=1), g2.norm(dim=1)
    keep = (n1 != 0) & (n2 != 0)
    if not bool(keep.any()):
        return g2.sum() * 0.0
    cos = (g1[keep] * g2[keep]).sum(1) / (n1[keep] * n2[keep])
    return (1.0 - cos).mean()


# --------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """What one step does to a batch: the inner maximisation and the loss.

    ``threat`` and ``step_size`` (absolute, pixels in [0, 1]) are needed by every mode but
    ``std``; ``attack_steps`` counts PGD / TRADES steps. ``adv_fraction`` < 1 makes only the
    first ``ceil(fraction * B)`` examples of a batch adversarial (Goodfellow et al. 2015, Eq. 2).
    ``grad_align`` > 0 adds ``grad_align * ``:func:`grad_align_penalty` on the clean batch
    (GradAlign, Andriushchenko & Flammarion 2020). The defaults are plain cross-entropy training.
    """

    mode: str = "std"
    threat: ThreatModel | None = None
    step_size: float = 0.0
    attack_steps: int = 1
    adv_fraction: float = 1.0
    trades_beta: float = 6.0
    label_smoothing: float = 0.0
    amp: bool = False
    grad_align: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("std", "fgsm", "fgsm-rs", "pgd", "trades"):
            raise ValueError(f"Recipe: unknown mode {self.mode!r}")
        if self.mode != "std" and self.threat is None:
            raise ValueError(f"Recipe: mode {self.mode!r} needs a threat model")
        if self.grad_align and self.mode not in ("fgsm", "fgsm-rs", "pgd"):
            raise ValueError(f"Recipe: GradAlign needs an fgsm, fgsm-rs or pgd threat, not mode {self.mode!r}")

    @classmethod
    def fgsm_rs(cls, threat: ThreatModel) -> "Recipe":
        """FGSM with a random start and step 1.25 eps (Wong et al. 2020, Alg. 3)."""
        return cls(mode="fgsm-rs", threat=threat, step_size=1.25 * threat.eps)


@dataclass(frozen=True)
class Nets:
    """The model as each part of a step calls it: one module, unless compiled or under DDP.

    ``train``: the outer minimisation's forward (DDP-wrapped and/or compiled); ``attack``: the
    inner maximisation's forward (never through DDP); ``clean``: TRADES' clean forward;
    ``raw``: the module itself (put in eval mode for TRADES' attack).
    """

    train: nn.Module
    attack: nn.Module
    clean: nn.Module
    raw: nn.Module

    @classmethod
    def single(cls, model: nn.Module) -> "Nets":
        return cls(model, model, model, model)


@dataclass(frozen=True)
class StepOutput:
    """A step's (detached) loss and logits; ``clean_logits``: FGSM's first forward or TRADES'
    clean forward (``None`` otherwise); the first ``n_adv`` examples were adversarial."""

    loss: Tensor
    logits: Tensor
    clean_logits: Tensor | None
    n_adv: int


def _inner_max(nets: Nets, x: Tensor, y: Tensor, recipe: Recipe,
               generator: torch.Generator | None) -> tuple[Tensor, Tensor | None, int]:
    """The batch to train on, the clean logits the attack computed on the way, and n_adv."""
    n_adv = math.ceil(recipe.adv_fraction * len(x))
    if recipe.mode == "std":
        return x, None, n_adv
    if recipe.mode == "trades":
        with eval_mode(nets.raw):
            x_train = perturb_trades(nets.attack, x, recipe.threat, recipe.step_size, recipe.attack_steps, generator, recipe.amp)
        return x_train, None, n_adv
    x_adv, first = perturb(nets.attack, x[:n_adv], y[:n_adv], recipe.mode, recipe.threat, recipe.step_size,
                           recipe.attack_steps, generator, recipe.amp)
    clean_logits = first if recipe.mode == "fgsm" else None  # FGSM starts at x: its first forward is clean
    return (torch.cat([x_adv, x[n_adv:]]) if n_adv < len(x) else x_adv), clean_logits, n_adv


def sgd_step(nets: Nets, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, recipe: Recipe, *,
             lr: float, generator: torch.Generator | None = None) -> StepOutput:
    """One optimiser step on ``(x, y)`` at learning rate ``lr``; random starts from ``generator``."""
    for group in opt.param_groups:
        group["lr"] = lr
    x_train, clean_logits, n_adv = _inner_max(nets, x, y, recipe, generator)
    with autocast(x.device, recipe.amp):
        logits = nets.train(x_train)
        if recipe.mode == "trades":
            clean_logits = nets.clean(x)
            kl = F.kl_div(F.log_softmax(logits.float(), 1), F.softmax(clean_logits.float(), 1), reduction="batchmean")
            loss = F.cross_entropy(clean_logits.float(), y, label_smoothing=recipe.label_smoothing) + recipe.trades_beta * kl
        else:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
    if recipe.grad_align:
        loss = loss + recipe.grad_align * grad_align_penalty(nets.raw, x, y, recipe.threat, generator, recipe.amp)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return StepOutput(loss.detach(), logits.detach(), None if clean_logits is None else clean_logits.detach(), n_adv)


class EpochMeter:
    """An epoch's metric sums, kept on the device (no sync per step).

    ``sums``: loss * n, correct, adversarial correct, clean correct (float64); ``counts``: n,
    n adversarial, n clean (Python integers). :meth:`state` / ``EpochMeter(device, state)``
    carry a part-finished epoch through a resume.
    """

    def __init__(self, device: torch.device, state: list | None = None) -> None:
        if state is None:
            self.sums = torch.zeros(4, dtype=torch.float64, device=device)
            self.counts = [0, 0, 0]
        else:
            self.sums = torch.tensor(state[:4], dtype=torch.float64, device=device)
            self.counts = [int(c) for c in state[4:]]

    def add(self, out: StepOutput, y: Tensor, mode: str) -> None:
        with torch.no_grad():
            hit = (out.logits.argmax(1) == y).double()
            adv_part = hit if mode == "trades" else hit[: out.n_adv]
            clean_hits = hit[out.n_adv :]
            if out.clean_logits is not None:  # FGSM's first forward (its clean part) or TRADES' clean logits
                first_hits = (out.clean_logits.argmax(1) == y[: len(out.clean_logits)]).double()
                clean_hits = first_hits if mode == "trades" else torch.cat([first_hits, clean_hits])
            if mode == "std":
                clean_hits, adv_part = hit, hit[:0]
            self.sums += torch.stack([out.loss.double() * len(y), hit.sum(), adv_part.sum(), clean_hits.sum()])
            self.counts = [self.counts[0] + len(y), self.counts[1] + len(adv_part), self.counts[2] + len(clean_hits)]

    def state(self) -> list:
        return self.sums.tolist() + self.counts

    def mean_loss_and_accuracy(self) -> tuple[float, float]:
        """(mean loss, accuracy) over the examples seen (NaN-free: 0 / 1 when none)."""
        loss_sum, correct = self.sums[:2].tolist()
        return loss_sum / max(self.counts[0], 1), correct / max(self.counts[0], 1)
