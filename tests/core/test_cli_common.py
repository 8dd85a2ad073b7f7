"""The helpers every subcommand shares: display names of checkpoints, checkpoint loading, threat arguments."""

from __future__ import annotations

import argparse

import pytest

from robustlens.cli_common import add_format_size_args, add_threat_args, checkpoint_names, load_model
from robustlens.errors import UserError


def test_checkpoint_names_stems_names_and_repeats():
    assert checkpoint_names(["a/std.safetensors", "b/adv.safetensors"], None) == ["std", "adv"]
    assert checkpoint_names(["x/m.safetensors", "y/m.safetensors", "z/m.safetensors"], None) == ["m", "m#2", "m#3"]
    assert checkpoint_names(["x/m.safetensors", "y/m.safetensors"], None, numbered=True) == ["m_0", "m_1"]
    assert checkpoint_names(["a.safetensors"], ["std"], numbered=True) == ["std"]
    with pytest.raises(UserError, match=r"^--name: 1 names for 2 checkpoints; give one$"):
        checkpoint_names(["a", "b"], ["x"], hint="; give one")


def test_load_model_missing_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^--judge .*none\.safetensors: file not found$"):
        load_model(str(tmp_path / "none.safetensors"), "cpu", flag="--judge")


def test_threat_and_format_arguments_keep_per_command_defaults():
    p = argparse.ArgumentParser()
    add_threat_args(p, eps_default="8/255", eps_help="radius")
    add_format_size_args(p)
    a = p.parse_args([])
    assert (a.threat, a.eps, a.format, a.size) == ("linf", "8/255", None, None)
    q = argparse.ArgumentParser()
    add_threat_args(q, threat_flag="--eval-norm", threat_default="l2", eps_flag="--eval-eps", eps_default="0.25", eps_help="")
    b = q.parse_args(["--eval-eps", "0.5"])
    assert (b.eval_norm, b.eval_eps) == ("l2", "0.5")
