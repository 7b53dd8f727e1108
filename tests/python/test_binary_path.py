"""The packaging tests find the binary where cargo puts it: under CARGO_TARGET_DIR when that is
set (relative to the repository, as cargo reads it), else target/."""

from __future__ import annotations

from pathlib import Path

import conftest


def test_binary_path_follows_cargo_target_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("CARGO_TARGET_DIR", raising=False)
    assert conftest.binary_path() == conftest.REPO / "target" / "debug" / "pullsecret-injector"
    monkeypatch.setenv("CARGO_TARGET_DIR", str(tmp_path))
    assert conftest.binary_path() == tmp_path / "debug" / "pullsecret-injector"
    monkeypatch.setenv("CARGO_TARGET_DIR", "build/cargo")
    assert conftest.binary_path() == conftest.REPO / "build" / "cargo" / "debug" / "pullsecret-injector"


def test_no_test_or_script_looks_only_in_target():
    """Everything that runs the built binary goes through binary_path (or CARGO_TARGET_DIR)."""
    offenders = []
    for path in list((conftest.REPO / "tests" / "python").glob("*.py")) + list((conftest.REPO / "scripts").iterdir()):
        if path.name in {"conftest.py", Path(__file__).name} or not path.is_file():
            continue
        text = path.read_text()
        for needle in ("target/debug", "target/release", '"target"'):
            if needle in text and "CARGO_TARGET_DIR" not in text:
                offenders.append(f"{path.name}: {needle}")
    assert not offenders, offenders
