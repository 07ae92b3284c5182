"""requirements.lock decides every installed version: it satisfies pyproject.toml, every entry
is pinned with hashes, and the tested venv holds
exactly the lock's versions (so a fresh clone installs what was tested, whatever is released
tomorrow)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"


def lock_pins(text: str) -> dict[str, tuple[str, list[str]]]:
    """Name -> (version, hashes) of every ``name==version \\ --hash=...`` entry."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", text):
        head = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", block)
        if head:
            name = canonicalize_name(re.sub(r"\[.*\]", "", head.group(1)))
            pins[name] = (head.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


PINS = lock_pins(LOCK.read_text())


def test_every_lock_entry_is_pinned_with_hashes():
    assert len(PINS) > 100
    unhashed = sorted(name for name, (_, hashes) in PINS.items() if not hashes)
    assert not unhashed, f"entries without --hash: {unhashed}"


def test_lock_parser_reads_a_real_entry():
    sample = "abc==1.2 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via x\nzzz==3\n"
    assert lock_pins(sample) == {"abc": ("1.2", ["a" * 64]), "zzz": ("3", [])}


def _declared() -> list[Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"]["optional-dependencies"].values():
        reqs += extra
    for group in data["dependency-groups"].values():
        reqs += group
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize("req", _declared(), ids=str)
def test_lock_satisfies_pyproject(req):
    name = canonicalize_name(req.name)
    assert name in PINS, f"{req.name} is declared in pyproject.toml but not locked: run make lock"
    version = PINS[name][0]
    assert req.specifier.contains(version, prereleases=True), (
        f"lock pins {req.name}=={version}, pyproject wants {req}: run make lock"
    )


def test_tested_venv_holds_exactly_the_lock():
    mismatched = {}
    for name, (version, _) in PINS.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            mismatched[name] = (version, None)
            continue
        if installed != version:
            mismatched[name] = (version, installed)
    assert not mismatched, f"lock vs installed: {mismatched}"
