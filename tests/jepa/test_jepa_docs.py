"""The worked example of docs/jepa.md ("Plugging in your own MDP") runs as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "jepa.md"


def test_user_mdp_example_in_the_docs_runs(capsys):
    text = DOC.read_text()
    section = text[text.index("## Plugging in your own MDP"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "train(cfg, mdp=Line())" in code
    namespace = {"__name__": "jepa_docs_example"}
    exec(compile(code, str(DOC), "exec"), namespace)
    report = namespace["result"].report
    assert report.n_classes == 6 and report.n_collapsed_pairs == 0  # the numbers the comment states
    assert capsys.readouterr().out.split() == ["6", "0"]
