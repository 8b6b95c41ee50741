"""rnnlab.report.html: one rule for undefined scores in the HTML report and the plain-text tables."""

from __future__ import annotations

from rnnlab.report.html import score_cell, table


def test_undefined_scores_read_the_same_in_html_and_text():
    html = table(["", "precision", "MASE"], [["a", float("nan"), 0.25], ["b", 1.0, float("nan")]])
    assert html.count("<td>-</td>") == 2 and "nan" not in html and "<td>0.25</td>" in html
    assert [score_cell(v) for v in (float("nan"), 0.5, 22020.0)] == ["-", "0.5000", "2.202e+04"]
