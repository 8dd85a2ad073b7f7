"""Shared fixtures for the study tests: a tiny spec that runs end to end in seconds."""

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
