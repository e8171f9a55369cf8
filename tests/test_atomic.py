import os

import pytest

from icreward.atomic import atomic_dir, atomic_write


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_write(target) as f:
        f.write("new")
    assert target.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~mask  # as a plain open() would make it, not mkstemp's 0600


def test_atomic_dir_keeps_old_folder_on_crash(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target, marker=("a",)) as d:
        (d / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, marker=("a",)) as d:  # "a" marks an earlier output: it may be replaced
            (d / "a").write_text("2")
            raise RuntimeError("crash")
    assert (target / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
