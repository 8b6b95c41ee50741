"""Fixtures shared by the task tests."""

import pytest
from lm_corpus import LM_TEXT


@pytest.fixture
def text_file(tmp_path):
    """LM_TEXT written to a file (a module may define its own text_file for another corpus)."""
    p = tmp_path / "corpus.txt"
    p.write_text(LM_TEXT)
    return p
