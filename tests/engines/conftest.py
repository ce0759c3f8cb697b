"""Fixtures of the engine tests."""
import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def fake_sglang(tmp_path, monkeypatch):
    """The fake sglang on sys.path and PYTHONPATH; yields the folder it records into."""
    pkg = tmp_path / "pkg"
    shutil.copytree(os.path.join(HERE, "fake_sglang"), pkg)
    rec = tmp_path / "rec"
    rec.mkdir()
    monkeypatch.setenv("FAKE_SGLANG_DIR", str(rec))
    monkeypatch.setenv("PYTHONPATH", str(pkg))
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setenv("SGLANG_FORCE_STREAM_INTERVAL", "")   # then unset: the engine's setting is undone after the test
    monkeypatch.delenv("SGLANG_FORCE_STREAM_INTERVAL")
    yield rec
    for name in [m for m in sys.modules if m == "sglang" or m.startswith("sglang.")]:
        del sys.modules[name]
