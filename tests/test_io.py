"""Atomic writes: whole files only, with the permissions any new file gets."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from raypipe.io import write_json_atomic, write_text_atomic


def test_an_atomic_write_gets_the_usual_permissions_not_mkstemps(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        import importlib

        import raypipe.io

        importlib.reload(raypipe.io)
        raypipe.io.write_text_atomic(tmp_path / "a.md", "x")
        assert stat.S_IMODE((tmp_path / "a.md").stat().st_mode) == 0o644
    finally:
        os.umask(mask)
        importlib.reload(raypipe.io)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    from raypipe.io import atomic_path

    write_json_atomic(tmp_path / "m.json", {"a": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(tmp_path / "m.json") as tmp:
            tmp.write_text("{\"a\": 2, partial")
            raise RuntimeError("disk full")
    assert (tmp_path / "m.json").read_text().replace(" ", "").replace("\n", "") == '{"a":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    write_text_atomic(tmp_path / "m.json", "new")
    assert (tmp_path / "m.json").read_text() == "new"


def test_json_text_reads_back_as_the_usual_dump_with_scalar_lists_on_one_line(tmp_path: Path) -> None:
    import json
    import math

    from raypipe.io import json_text

    obj = {"b": {"per_user": [0.5, 0.25, 0.0], "ks": [], "none": {}}, "a": [{"x": 1}, [1, 2], "s"],
           "ints": {10: "ten", 2: "two"}, "path": tmp_path, "nan": float("nan"), "flags": [True, None, "a]b"]}
    text = json_text(obj)
    usual = json.dumps(obj, indent=2, sort_keys=True, default=str)
    back, want = json.loads(text), json.loads(usual)
    assert math.isnan(back.pop("nan")) and math.isnan(want.pop("nan"))
    assert back == want and list(back) == list(want)  # same values, same key order
    lines = text.splitlines()
    assert '    "per_user": [0.5, 0.25, 0.0]' in lines and '  "flags": [true, null, "a]b"],' in lines
    assert '    [1, 2],' in lines and '      "x": 1' in lines  # a list holding containers stays one element per line
    assert text.endswith("}\n") and len(lines) == 21
    write_json_atomic(tmp_path / "r.json", obj)
    assert (tmp_path / "r.json").read_text() == text
