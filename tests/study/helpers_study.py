"""The tiny study spec (runs end to end in seconds) and its writers; the fixtures in conftest.py hand them to the tests."""

from __future__ import annotations

from pathlib import Path

TINY_SPEC = """
name = "tiny"
out_dir = "{out}"
[data]
n_train = 200
n_test = 64
options = {{ contrast = 0.07, n_conflict = 64 }}
[models.std]
epochs = 1
arch_options = {{ width = 4 }}
train_options = {{ check_size = 0 }}
[models.adv]
epochs = 1
arch_options = {{ width = 4 }}
train_options = {{ check_size = 0 }}
[stages.robustness]
n = 32
pgd_steps = 2
autoattack_n = 8
autoattack_steps = 2
autoattack_targets = 1
[stages.transforms]
n = 32
blur_sigmas = [0.0, 2.0]
median_repeats = 1
[stages.bias]
n = 32
[stages.neurons]
n = 32
[stages.saliency]
n = 2
smoothgrad_samples = 2
ig_steps = 2
[stages.featvis]
channels = 2
steps = 2
[stages.sanity]
n = 1
methods = ["vanilla"]
[stages.localisation]
n = 8
[stages.generation]
n = 2
steps = 2
"""


def write_tiny_spec(folder: Path, **replace: str) -> Path:
    text = TINY_SPEC.format(out=str(folder / "runs"))
    for old, new in replace.items():
        text = text.replace(old, new)
    p = folder / "tiny.toml"
    p.write_text(text)
    return p


# Appended to TINY_SPEC: the opt-in transfer and construct stages, run for real but tiny
# (targets at 16 and 24 px, linear probe, a handful of construction steps).
TINY_TRANSFER = """
[stages.transfer]
enabled = true
sizes = [16, 24]
epochs = 2
lr = 0
batch_size = 64
linear_probe = true
n_train = 96
n_test = 48
target_options = {{ seed = 1 }}
[stages.construct]
enabled = true
n = 48
steps = 3
eps = 1.0
robust_steps = 3
epochs = 1
batch_size = 32
eval_n = 32
attack_steps = 2
chunk_size = 32
"""


def write_tiny_transfer_spec(folder: Path, name: str = "tiny") -> Path:
    """The tiny spec with transfer and construct enabled (run folder ``runs/<name>``)."""
    text = (TINY_SPEC + TINY_TRANSFER).format(out=str(folder / "runs")).replace('name = "tiny"', f'name = "{name}"')
    p = folder / f"{name}.toml"
    p.write_text(text)
    return p
