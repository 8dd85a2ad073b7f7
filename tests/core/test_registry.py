"""Every family's registry holds exactly its names in robustlens.names; unknown names get a close match."""

from __future__ import annotations

import pytest

from robustlens import names
from robustlens.errors import UserError
from robustlens.registry import Registry


def test_each_registry_holds_exactly_its_names():
    from robustlens.data.formats import READERS
    from robustlens.explain.saliency import METHODS, SALIENCY
    from robustlens.probes.transforms import PROBES

    assert READERS.names() == list(names.FORMATS)
    assert SALIENCY.names() == list(names.SALIENCY_METHODS) == list(METHODS)
    assert PROBES.names() == list(names.PROBES)


def test_registry_get_suggests_a_close_match():
    reg: Registry[int] = Registry("colour", key="--colour")
    reg.add("red", 1)
    reg.add("green", 2)
    assert reg.get("red") == 1
    with pytest.raises(UserError, match=r"^--colour: unknown colour 'gren' \(did you mean 'green'\?\); valid: red, green$"):
        reg.get("gren")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("red", 3)


def test_family_registries_suggest_close_matches():
    from robustlens.data.readers import READERS
    from robustlens.explain.saliency import SALIENCY
    from robustlens.models.zoo import create
    from robustlens.probes.transforms import PROBES

    with pytest.raises(UserError, match="did you mean 'cifar'"):
        READERS.get("cifra")
    with pytest.raises(UserError, match=r"^method: unknown saliency method 'gradcan' \(did you mean 'gradcam'\?\)"):
        SALIENCY.get("gradcan")
    with pytest.raises(UserError, match="did you mean 'median'"):
        PROBES.get("medain")
    with pytest.raises(UserError, match=r"--arch: unknown architecture 'resnet19' \(did you mean 'resnet18'\?\)"):
        create("resnet19")


def test_reader_declarations():
    """What read_splits knows about each reader comes from its Reader record."""
    from robustlens.data.formats import READER_OPTIONS, READERS

    cached = [n for n, r in READERS.items() if r.cached]
    assert cached == ["folder", "archive", "tinyimagenet", "imagenet"]
    assert READER_OPTIONS == ("channels", "resample", "num_workers", "preprocessing", "label", "limit", "limit_seed",
                              "cache_dir")
    assert READERS.get("cifar").options == ("label",)
    assert all(r.folder is not None or r.file is not None for _, r in READERS.items())
