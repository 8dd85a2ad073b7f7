"""Robust and non-robust data sets (Ilyas et al. 2019, *Adversarial Examples Are Not Bugs,
They Are Features*, Sec. 3).

* **Robust data set** D_R (Sec. 3.1): for every training pair (x, y), start from noise or from
  another random training image x_0 and minimise ``||g(x_r) - g(x)||_2`` over the input x_r by
  normalised L2 gradient descent, where g is the penultimate representation of an
  adversarially trained model; keep x_r in [0, 1] and the label y. (Paper, CIFAR-10: 1000
  steps of size 0.1, x_0 a random training image.) Only features the robust model uses
  survive, so a standard model trained on D_R becomes robust.
* **Non-robust data sets** D_det / D_rand (Sec. 3.2): a targeted L2 PGD perturbation of x
  towards a target class t for a *standard* model, ``x_adv = argmin_{||x'-x||_2<=eps} CE(f(x'), t)``,
  relabelled with t; ``t = (y + 1) mod C`` (det) or t uniform over the C classes (rand).
  (Paper, CIFAR-10: eps 0.5, step 0.1, 100 steps.) The images look like class y but carry
  only the non-robust features of t, yet a standard model trained on them generalises to the
  original test set.

Storage. Construction runs in chunks; each finished chunk is written atomically as
``chunks/chunk_00012.npz`` (float32 images in [0, 1], labels, source indices, original labels)
and skipped on restart, so an interrupted run continues where it stopped and gives the same
result as an uninterrupted one (every chunk's randomness derives from (seed, chunk index)).
The finished set is ``data.npz`` with the exact float32 images. :meth:`ConstructedSet.to_imageset`
gives an :class:`~robustlens.data.ImageSet` (uint8, rounded); that is fine for D_R, but for
D_det / D_rand rounding adds noise of L2 length about 0.29 / 255 * sqrt(d) (0.06 at 32x32x3),
a tenth of the eps = 0.5 perturbation that carries the label, so models are trained on the
float images.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robustlens.data.base import sample_indices
from robustlens.errors import UserError
from robustlens.evalmode import eval_mode
from robustlens.io import atomic_path, versions, write_json_atomic
from robustlens.threat import L2
from robustlens.attacks.pgd import pgd
from robustlens.progress import track
from robustlens.transfer._loops import robust_accuracy, sgd_fit

KINDS = ("robust", "det", "rand")

#: CPU-friendly defaults; the paper's CIFAR-10 values are in ``PAPER``
DEFAULTS = {
    "robust": {"steps": 200, "step_size": 0.1, "eps": None, "init": "image"},
    "det": {"steps": 40, "step_size": 0.1, "eps": 0.5, "init": None},
    "rand": {"steps": 40, "step_size": 0.1, "eps": 0.5, "init": None},
}
PAPER = {
    "robust": {"steps": 1000, "step_size": 0.1, "init": "image"},
    "det": {"steps": 100, "step_size": 0.1, "eps": 0.5},
    "rand": {"steps": 100, "step_size": 0.1, "eps": 0.5},
}


def invert_representation(
    model: nn.Module,
    x_target: Tensor,
    x_init: Tensor,
    *,
    steps: int,
    step_size: float = 0.1,
) -> Tensor:
    """Representation inversion: ``argmin_{x_r in [0,1]} ||g(x_r) - g(x_target)||_2`` (Ilyas et al. 2019, Eq. in Sec. 3.1).

    Normalised L2 gradient descent from ``x_init``: ``x_r <- clip(x_r - step * grad / ||grad||_2)``,
    with ``robustlens.threat.L2`` supplying the direction and the [0, 1] projection (an
    unbounded ball: the inversion is not norm-constrained). ``model`` is used in eval mode;
    gradients are taken with respect to the input only.
    """
    with eval_mode(model):
        with torch.no_grad():
            goal = model.penultimate(x_target)
        threat = L2(1e6)  # only the box [0, 1] constrains the inversion
        x_r = x_init.detach().clone().clamp_(0, 1)
        for _ in range(steps):
            x_r.requires_grad_(True)
            dist = (model.penultimate(x_r) - goal).flatten(1).norm(dim=1).sum()
            (grad,) = torch.autograd.grad(dist, x_r)
            x_r = threat.project(threat.ascent_step(x_r.detach(), -grad, step_size), x_r.detach())
        return x_r.detach()


def representation_distance(model: nn.Module, a: Tensor, b: Tensor) -> Tensor:
    """Per-example ``||g(a) - g(b)||_2`` with g = ``model.penultimate`` (eval mode)."""
    with torch.no_grad(), eval_mode(model):
        return (model.penultimate(a) - model.penultimate(b)).flatten(1).norm(dim=1)


def targeted_perturbation(model: nn.Module, x: Tensor, target: Tensor, *, eps: float, steps: int, step_size: float) -> Tensor:
    """Targeted L2 PGD (no random start) towards ``target``: ``argmin_{||d||_2 <= eps} CE(f(x + d), t)`` (Ilyas et al. 2019, Sec. 3.2)."""
    with eval_mode(model):
        return pgd(model, x, target, L2(eps), steps=steps, step_size=step_size, targeted=True, random_start=False)


def make_targets(kind: str, y: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """``(y + 1) mod C`` for ``det``; uniform over the C classes for ``rand`` (as in the paper)."""
    if kind == "det":
        return (y + 1) % num_classes
    if kind == "rand":
        return torch.randint(0, num_classes, y.shape, generator=generator)
    raise UserError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")


@dataclass
class ConstructedSet:
    """A constructed data set: exact float images in [0, 1] and the labels to train with."""

    images: Tensor  # float32 (N, C, H, W)
    labels: Tensor  # int64 (N,)
    classes: list[str]
    kind: str
    source_index: Tensor  # int64 (N,): the training image each one was built from
    original_labels: Tensor  # int64 (N,): y of that image
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def originals(cls, train_set: Any, index: Tensor) -> "ConstructedSet":
        """The unmodified training images at ``index`` with their own labels (Ilyas et al.'s D):
        the baseline a construction from the same images is compared with."""
        index = torch.as_tensor(index, dtype=torch.long)
        labels = train_set.labels[index].clone()
        return cls(train_set.float(index), labels, list(train_set.classes), "original", index.clone(), labels.clone())

    def to_imageset(self):
        """An :class:`~robustlens.data.ImageSet` (uint8 after rounding; see the module note)."""
        from robustlens.data.base import ImageSet

        img = (self.images.clamp(0, 1) * 255).round().to(torch.uint8)
        return ImageSet(img, self.labels.clone(), list(self.classes), name=f"constructed:{self.kind}", meta=dict(self.meta))


def _chunk_path(out: Path, i: int) -> Path:
    return out / "chunks" / f"chunk_{i:05d}.npz"


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


@dataclass(frozen=True)
class _Recipe:
    """A construction's settings, checked and with the defaults of :data:`DEFAULTS` filled in."""

    kind: str
    steps: int
    step_size: float
    eps: float | None
    init: str | None
    chunk_size: int
    batch_size: int

    @classmethod
    def of(cls, kind: str, steps: int | None, step_size: float | None, eps: float | None, init: str | None,
           chunk_size: int, batch_size: int) -> "_Recipe":
        if kind not in KINDS:
            raise UserError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        d = DEFAULTS[kind]
        steps = int(steps if steps is not None else d["steps"])
        step_size = float(step_size if step_size is not None else d["step_size"])
        if kind == "robust":
            if eps is not None:
                raise UserError("--eps: the robust data set is an unconstrained inversion; --eps applies to det / rand only")
            init = init or d["init"]
            if init not in ("image", "noise"):
                raise UserError(f"--init: expected image or noise, got {init!r}")
        else:
            eps = float(eps if eps is not None else d["eps"])
            if eps <= 0:
                raise UserError(f"--eps: expected a positive L2 radius, got {eps}")
            init = None
        if steps < 1 or step_size <= 0:
            raise UserError(f"--steps / --step-size: expected positive values, got {steps} / {step_size}")
        if chunk_size < 1 or batch_size < 1:
            raise UserError("--chunk-size / --batch-size: expected positive integers")
        return cls(kind, steps, step_size, eps, init, chunk_size, batch_size)

    def config(self, n: int, seed: int, data_name: str, total: int) -> dict:
        """What ``construct.json`` records (and a restart must match)."""
        return {"kind": self.kind, "n": n, "steps": self.steps, "step_size": self.step_size, "eps": self.eps, "init": self.init,
                "chunk_size": self.chunk_size, "seed": seed, "data": data_name,
                # n < total: a seeded sample of the split (folders and archives are sorted by class)
                "selection": "all" if n == total else "seeded sample"}


def _check_sources(model: nn.Module, train_set: Any, kind: str, n: int | None) -> int:
    """The number of images to build (``n``, default all), checked against the split and the model."""
    total = len(train_set)
    if total == 0:
        raise UserError(f"--data {getattr(train_set, 'name', '')}: no training images")
    n = total if n is None else int(n)
    if not 1 <= n <= total:
        raise UserError(f"--n: expected 1..{total} (the training split's size), got {n}")
    if kind == "robust" and not hasattr(model, "penultimate"):
        raise UserError("--checkpoint: the robust data set needs a model with penultimate() (a robustlens ImageClassifier)")
    return n


def _open_out(out: Path, config: dict) -> ConstructedSet | None:
    """Claim ``out`` for ``config`` (refusing other settings); the finished set if it is there."""
    cfg_path = out / "construct.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text()).get("config", {})
        if old != config:
            diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
            raise UserError(f"--out {out}: holds a construction with other settings {diff} (old, new); use another --out")
    else:
        write_json_atomic(cfg_path, {"config": config, "status": "running", "versions": versions()})
    return load_constructed(out) if (out / "data.npz").exists() else None


def _build_chunk(model: nn.Module, train_set: Any, r: _Recipe, idx: Tensor, g: torch.Generator, device: torch.device) -> dict[str, np.ndarray]:
    """One chunk: its start images (D_R) or targets (D_det / D_rand) from ``g``, then the batches."""
    n = len(idx)
    y = train_set.labels[idx]
    if r.kind == "robust":
        if r.init == "image":
            x0_all = train_set.float(torch.randint(0, len(train_set), (n,), generator=g))
        else:
            x0_all = torch.rand((n, *train_set.images.shape[1:]), generator=g)
        labels = y.clone()
    else:
        labels = make_targets(r.kind, y, int(train_set.num_classes), g)
    outs = []
    for s in range(0, n, r.batch_size):
        xb = train_set.float(idx[s : s + r.batch_size], device=device)
        if r.kind == "robust":
            xr = invert_representation(model, xb, x0_all[s : s + r.batch_size].to(device), steps=r.steps, step_size=r.step_size)
        else:
            xr = targeted_perturbation(model, xb, labels[s : s + r.batch_size].to(device), eps=r.eps, steps=r.steps, step_size=r.step_size)
        outs.append(xr.float().cpu())
    return {
        "images": torch.cat(outs).numpy().astype(np.float32),
        "labels": labels.numpy().astype(np.int64),
        "source_index": idx.numpy().astype(np.int64),
        "original_labels": y.numpy().astype(np.int64),
    }


def _from_arrays(arrays: dict[str, np.ndarray], classes: list[str], kind: str, meta: dict) -> ConstructedSet:
    return ConstructedSet(torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]), classes, kind,
                          torch.from_numpy(arrays["source_index"]), torch.from_numpy(arrays["original_labels"]), meta=meta)


def construct_dataset(
    model: nn.Module,
    train_set: Any,
    kind: str,
    *,
    out_dir: str | Path | None = None,
    n: int | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    eps: float | None = None,
    init: str | None = None,
    chunk_size: int = 256,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> ConstructedSet:
    """Build D_R (``kind="robust"``, ``model`` adversarially trained) or D_det / D_rand
    (``kind="det"|"rand"``, ``model`` standard) from the first ``n`` images of ``train_set``.

    With ``out_dir``, finished chunks are written and reused (resumable); the finished set
    goes to ``out_dir/data.npz`` and ``out_dir/construct.json``. ``on_chunk(i)`` is called
    after chunk ``i`` is saved (tests use it to interrupt a run). Chunk ``i`` draws from a
    generator seeded by ``(seed, i)``, so a resumed run equals an uninterrupted one.
    """
    r = _Recipe.of(kind, steps, step_size, eps, init, chunk_size, batch_size)
    n = _check_sources(model, train_set, kind, n)
    device = torch.device(device)
    config = r.config(n, seed, getattr(train_set, "name", ""), len(train_set))
    chosen = sample_indices(len(train_set), n, seed, sort=True)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and (done := _open_out(out, config)) is not None:
        return done

    n_chunks = math.ceil(n / chunk_size)
    pieces: list[dict[str, np.ndarray]] = []
    t0 = time.time()
    for ci in track(range(n_chunks), f"construct {kind}", enabled=show_progress):
        path = _chunk_path(out, ci) if out is not None else None
        if path is not None and path.exists():
            with np.load(path) as z:
                pieces.append({k: z[k] for k in z.files})
            continue
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + ci)
        piece = _build_chunk(model, train_set, r, chosen[ci * chunk_size : min(n, (ci + 1) * chunk_size)], g, device)
        if path is not None:
            _save_npz(path, **piece)
        pieces.append(piece)
        if on_chunk is not None:
            on_chunk(ci)

    arrays = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    meta = {"config": config, "seconds": time.time() - t0, "classes": list(train_set.classes), "paper_settings": PAPER[kind],
            "storage": "float32 images in [0, 1] (exact; see robustlens.transfer.construct)"}
    result = _from_arrays(arrays, list(train_set.classes), kind, meta)
    if out is not None:
        _save_npz(out / "data.npz", **arrays)
        write_json_atomic(out / "construct.json", {"config": config, "status": "done", "n": n, "classes": list(train_set.classes),
                                                   "seconds": meta["seconds"], "storage": meta["storage"], "versions": versions()})
    return result


def _inversion_stats(model: nn.Module, cset: ConstructedSet, x_orig: Tensor, device: torch.device, batch_size: int) -> dict:
    """D_R: mean ||g(x_r) - g(x)||, relative to the mean ||g(x)||, and the pixel L2 distance."""
    dist, norm = [], []
    for s in range(0, len(cset), batch_size):
        xr, xo = cset.images[s:s + batch_size].to(device), x_orig[s:s + batch_size].to(device)
        dist.append(representation_distance(model, xr, xo).cpu())
        norm.append(model.penultimate(xo).flatten(1).norm(dim=1).cpu())
    d, g = torch.cat(dist), torch.cat(norm)
    return {"representation_distance": float(d.mean()),
            "relative_representation_distance": float(d.mean() / g.mean().clamp_min(1e-12)),
            "pixel_l2_to_original": float((cset.images - x_orig).flatten(1).norm(dim=1).mean())}


def construction_stats(kind: str, model: nn.Module, cset: ConstructedSet, x_orig: Tensor, *, device: str | torch.device = "cpu",
                       batch_size: int = 256) -> dict:
    """How well a construction did. D_R (``model``: its ADV source): the mean representation
    distance ||g(x_r) - g(x)||, also relative to the mean ||g(x)||, and the pixel L2 distance to
    the originals ``x_orig``; D_det / D_rand (``model``: the STD source): the targeted success
    (share of constructed images the source assigns to their target) and the mean L2 size of the
    perturbation. ``label_changed``: share of labels that differ from the original ones."""
    out: dict[str, Any] = {"n": len(cset)}
    device = torch.device(device)
    with torch.no_grad(), eval_mode(model):
        if kind == "robust":
            out.update(_inversion_stats(model, cset, x_orig, device, batch_size))
        else:
            pred = torch.cat([model(cset.images[s:s + batch_size].to(device)).argmax(1).cpu() for s in range(0, len(cset), batch_size)])
            out["target_success"] = float((pred == cset.labels).float().mean())
            out["mean_l2"] = float((cset.images - x_orig).flatten(1).norm(dim=1).mean())
    out["label_changed"] = float((cset.labels != cset.original_labels).float().mean())
    return out


def load_constructed(out_dir: str | Path) -> ConstructedSet:
    """Read a finished construction (``data.npz`` + ``construct.json``) from ``out_dir``."""
    out = Path(out_dir)
    data, cfg_path = out / "data.npz", out / "construct.json"
    if not data.exists() or not cfg_path.exists():
        raise UserError(f"{out}: no finished construction (data.npz + construct.json); run `robustlens construct` first")
    info = json.loads(cfg_path.read_text())
    with np.load(data) as z:
        arrays = {k: z[k] for k in z.files}
    return _from_arrays(arrays, list(info.get("classes", [])), info["config"]["kind"], info)


def _fresh_model(arch: str, num_classes: int, model_kwargs: dict | None, seed: int, device: torch.device) -> nn.Module:
    """``arch`` initialised from ``seed`` alone (the global RNG is left as it was)."""
    from robustlens.models import create

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create(arch, num_classes, **(model_kwargs or {})).to(device)


def _evaluate(model: nn.Module, test_set: Any, threat_norm: str, threat_eps: float, extra_parsed: list[tuple[str, str, float]], *,
              attack_steps: int, device: torch.device, seed: int) -> tuple[dict, list[dict]]:
    """Clean and PGD accuracy on the original test set at the main threat and at each extra one."""
    from robustlens.threat import make_threat

    x_test = test_set.float()
    ev = robust_accuracy(model, x_test, test_set.labels, make_threat(threat_norm, threat_eps), steps=attack_steps, device=device, seed=seed)
    extra = []
    for text, norm, eps in extra_parsed:
        e = robust_accuracy(model, x_test, test_set.labels, make_threat(norm, eps), steps=attack_steps, device=device, seed=seed)
        extra.append({"threat": text, "norm": norm, "eps": eps, "robust_accuracy": e["robust_accuracy"]})
    return ev, extra


def _predictions(model: nn.Module, images: Tensor, device: torch.device, batch_size: int = 256) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(images[s : s + batch_size].to(device)).argmax(1).cpu() for s in range(0, len(images), batch_size)])


def train_and_evaluate(
    data: ConstructedSet,
    test_set: Any,
    *,
    arch: str = "small_cnn",
    model_kwargs: dict | None = None,
    epochs: int = 15,
    lr: float = 0.05,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    augment: bool = False,
    threat_norm: str = "l2",
    threat_eps: float = 0.25,
    attack_steps: int = 20,
    extra_threats: Sequence[str] = (),
    seed: int = 0,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
) -> dict:
    """Train a fresh standard model on the constructed set; evaluate it on the ORIGINAL test set.

    Training is :func:`~robustlens.transfer._loops.sgd_fit` on the exact float images (SGD,
    momentum 0.9, cosine lr). Evaluation: clean accuracy and PGD (``attack_steps`` steps, random
    start) accuracy at ``threat_eps`` on the original test images and labels (Ilyas et al. 2019
    report L2 eps 0.25 on CIFAR-10), and the same PGD at each of ``extra_threats`` (``"norm:eps"``
    texts such as ``"l2:0.5"``), so one fresh model gives a robustness curve. The trained model
    is returned under ``"model"``.
    """
    from robustlens.threat import parse_threat_spec

    extra_parsed = [(str(t), *parse_threat_spec(t, name="extra threat")) for t in extra_threats]  # fail before training
    if data.images.shape[1:] != test_set.images.shape[1:]:
        raise UserError(f"test set images are {tuple(test_set.images.shape[1:])} but the constructed set's are {tuple(data.images.shape[1:])}")
    device = torch.device(device)
    model = _fresh_model(arch, len(data.classes) or test_set.num_classes, model_kwargs, seed, device)
    model.train()
    t0 = time.time()
    last = sgd_fit(model, data.images, data.labels, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed,
                   augment=augment, schedule="cosine", device=device, show_progress=show_progress, desc=f"train on {data.kind}")
    model.eval()
    ev, extra = _evaluate(model, test_set, threat_norm, threat_eps, extra_parsed, attack_steps=attack_steps, device=device, seed=seed)
    # How often the model predicts the *original* label on its own training set: for D_det
    # this is low (it learnt the targets), which shows it is not simply reading y from x.
    pred = _predictions(model, data.images, device)
    return {
        "arch": arch, "model_kwargs": model_kwargs or {}, "epochs": epochs, "lr": lr, "batch_size": batch_size, "augment": augment,
        "train_accuracy_constructed_labels": float((pred == data.labels).float().mean()),
        "train_agreement_with_original_labels": float((pred == data.original_labels).float().mean()),
        "test_clean_accuracy": ev["clean_accuracy"],
        "test_robust_accuracy": ev["robust_accuracy"],
        "attack": {"name": ev.get("attack", "pgd"), "norm": threat_norm, "eps": threat_eps, "steps": attack_steps},
        "extra_threats": extra,
        "n_train": len(data),
        "n_test": len(test_set),
        "seconds": time.time() - t0,
        "last_epoch": last,
        "model": model,
    }


def plot_fresh_models(results: dict[str, dict], path: str | Path, threat: dict, chance: float) -> Path:
    """Grouped bars: for each fresh model (``{label: {clean_accuracy, robust_accuracy,
    extra_threats}}``), clean accuracy on the original test set, PGD accuracy at ``threat``
    (``{norm, eps}``) and at each extra threat; a dashed line at ``chance``. Written atomically."""
    from robustlens.plot import pyplot, save_figure

    plt = pyplot()
    names = list(results)
    eps_txt = f"{threat['eps'] * 255:.3g}/255" if threat["norm"] == "linf" else f"{threat['eps']:.3g}"
    series = [("clean", [results[n]["clean_accuracy"] for n in names]),
              (f"PGD {threat['norm']} {eps_txt}", [results[n]["robust_accuracy"] for n in names])]
    for t in [e["threat"] for e in results[names[0]].get("extra_threats", [])] if names else []:
        series.append((f"PGD {t.replace(':', ' ')}",
                       [next((e["robust_accuracy"] for e in results[n].get("extra_threats", []) if e["threat"] == t), 0.0) for n in names]))
    fig, ax = plt.subplots(figsize=(1.8 + (0.65 + 0.35 * len(series)) * len(names), 3.3))
    w = 0.8 / len(series)
    for j, (label, vals) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * w for i in range(len(names))]
        ax.bar(xs, vals, w, label=label)
        for xv, v in zip(xs, vals):
            ax.text(xv, v + 0.01, f"{v:.2f}", ha="center", fontsize=6)
    ax.axhline(chance, color="grey", ls="--", lw=1)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylim=(0, 1.08), ylabel="accuracy on the original test set", title="fresh models trained on each set")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
