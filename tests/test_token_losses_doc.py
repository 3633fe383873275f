"""The token-level guide's example runs as written."""

import re
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "token_level.md"


def test_token_level_guide_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert len(blocks) == 1, "the guide has one python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(GUIDE), "exec"), namespace)  # noqa: S102 (our own docs)
    printed = capsys.readouterr().out
    assert "PartitionFractions(" in printed and "nan" not in printed.lower()
    assert namespace["grad"](namespace["log_prob"]).shape == (4, 6)
