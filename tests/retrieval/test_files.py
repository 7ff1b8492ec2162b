"""The one atomic writer (retrieval/files.py)."""

from __future__ import annotations


def test_a_written_file_gets_the_mode_of_any_new_file(tmp_path):
    """Not mkstemp's 0600: a report or a selection written here is readable by whoever may read the folder."""
    import os

    from tutorloop.retrieval.files import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
