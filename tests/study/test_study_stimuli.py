"""The opt-in stimuli stage: Geirhos-layout folders through the study, and its bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustlens.errors import UserError
from robustlens.study import run_study
from robustlens.study.spec import load_spec

# the tiny study's models answer in the procedural set's shape classes
CLASS_MAP = '{ airplane = "circle", cat = ["square", "star"], dog = "heart" }'


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)


def stimulus_folders(root: Path) -> dict[str, Path]:
    names = {"cue-conflict": ["airplane/airplane1-cat1.png", "cat/cat1-dog1.png", "dog/dog1-dog1.png",
                              "bear/bear1-cat1.png"],
             "silhouettes": ["airplane/airplane1.png", "cat/cat1.png", "bear/bear1.png"]}
    for k, (kind, rels) in enumerate(names.items()):
        for i, rel in enumerate(rels):
            _png(root / kind / rel, 10 * k + i)
    return {"cue_conflict": root / "cue-conflict", "silhouettes": root / "silhouettes"}


def _spec(tmp_path, write_tiny_spec, folders: dict[str, Path], class_map: str = CLASS_MAP) -> Path:
    spec = write_tiny_spec(tmp_path)
    lines = ["[stages.stimuli]", "enabled = true", f"class_map = {class_map}", "batch_size = 2"]
    lines += [f'{k} = "{p}"' for k, p in folders.items()]
    spec.write_text(spec.read_text() + "\n".join(lines) + "\n")
    return spec


@pytest.fixture(scope="module")
def stimuli_run(tmp_path_factory, write_tiny_spec):
    """The tiny study with ``--only stimuli`` (data, the two tiny models, the stimuli stage), run once."""
    import torch

    tmp = tmp_path_factory.mktemp("stimuli_study")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = load_spec(_spec(tmp, write_tiny_spec, stimulus_folders(tmp / "stimuli")))
        out = run_study(spec, stream=open(os.devnull, "w"), only=["stimuli"])
    finally:
        torch.set_num_threads(threads)
    return tmp, spec, out


def test_stimuli_stage_path(stimuli_run):
    tmp_path, spec, out = stimuli_run
    res = json.loads((spec.run_dir / "results.json").read_text())
    st = res["results"]["stimuli"]
    assert st["class_map"] == "table" and st["categories"] == ["airplane", "cat", "dog"]
    assert st["sets"]["cue_conflict"]["images"] == 4 and st["sets"]["silhouettes"]["images"] == 3
    for name in ("std", "adv"):
        cue, sil = st["models"][name]["cue_conflict"], st["models"][name]["silhouettes"]
        assert (cue["n"], cue["dropped"], cue["n_shape_texture"]) == (3, 1, 2)  # bear dropped, dog1-dog1 agrees
        assert cue["shape_hits"] + cue["texture_hits"] <= 2
        assert (sil["n"], sil["dropped"]) == (2, 1)
    assert [r["label"] for r in st["references"]][0] == "humans"
    html = (spec.run_dir / "report.html").read_text()
    assert "Geirhos" in html and "Salman et al." in html and "Shape bias on cue-conflict images" in html
    assert out["outputs"]["stimuli"].measured


def test_a_stimuli_folder_in_another_layout_stops_before_any_work(tmp_path, write_tiny_spec):
    folders = stimulus_folders(tmp_path / "stimuli")
    _png(folders["cue_conflict"] / "cat" / "IMG_0001.png", 99)
    spec = load_spec(_spec(tmp_path, write_tiny_spec, folders))
    with pytest.raises(UserError, match=r"cat/IMG_0001\.png: does not parse as a cue-conflict stimulus") as e:
        run_study(spec, stream=open(os.devnull, "w"), only=["stimuli"])
    assert "\n" not in str(e.value)
    assert not spec.run_dir.exists()  # nothing written


def test_a_class_map_naming_a_class_the_model_lacks(stimuli_run, write_tiny_spec, one_thread):
    tmp_path, first, _ = stimuli_run  # the same run folder: data and models come from its cache
    before = sorted(p.name for p in (first.run_dir / "stages").iterdir())
    results = (first.run_dir / "results.json").read_bytes()
    spec = load_spec(_spec(tmp_path, write_tiny_spec, {"cue_conflict": tmp_path / "stimuli" / "cue-conflict"},
                           class_map='{ airplane = "circle", car = "automobile" }'))
    with pytest.raises(UserError, match=r"stages\.stimuli\.class_map\.car: the model has no class 'automobile'") as e:
        run_study(spec, stream=open(os.devnull, "w"), only=["stimuli"])
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in (first.run_dir / "stages").iterdir()) == before  # nothing written
    assert (first.run_dir / "results.json").read_bytes() == results


def test_spec_checks_of_the_stimuli_table(tmp_path, write_tiny_spec):
    spec = _spec(tmp_path, write_tiny_spec, {"cue_conflict": tmp_path / "nowhere"})
    with pytest.raises(UserError, match=r"stages\.stimuli\.cue_conflict: stimulus folder .* does not exist"):
        load_spec(spec)
    spec = _spec(tmp_path, write_tiny_spec, stimulus_folders(tmp_path / "s"), class_map='"imagenet21k"')
    with pytest.raises(UserError, match=r"stages\.stimuli\.class_map: expected 'imagenet16' or a table"):
        load_spec(spec)


@pytest.mark.parametrize("example", ["imagenet.toml", "cifar10_robustbench.toml"])
def test_the_published_model_examples_parse(tmp_path, example):
    """Every file the example names, put where it says (empty weight files: the spec checks
    paths and catalogue names, the catalogue checks contents at load time)."""
    import re
    import shutil

    root = Path(__file__).resolve().parents[2] / "examples"
    text = (root / example).read_text()
    folder = tmp_path / "examples"
    folder.mkdir()
    shutil.copy(root / example, folder / example)
    for path in re.findall(r'checkpoint = "[^@"]+@([^"]+)"', text):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(b"")
    for key in ("cue_conflict", "silhouettes", "edges"):
        (folder / re.search(rf'^{key} = "([^"]+)"', text, re.M).group(1)).mkdir(parents=True)
    source = re.search(r'^source = "([^"]+)"', text, re.M).group(1)
    if not (root / source).exists():
        (folder / source / "val" / "n01440764").mkdir(parents=True)
    else:
        (folder / source).parent.mkdir(parents=True, exist_ok=True)
        (folder / source).symlink_to(root / source)
    spec = load_spec(folder / example)
    assert spec.stages.stimuli.enabled and spec.data.preprocessing in ("squash", "res256crop224")
    assert all("@" in m.checkpoint for n, m in spec.models.items() if n != "judge" or example == "imagenet.toml")
