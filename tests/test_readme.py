"""The README's example of importing the losses runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_loss_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    example = next(b for b in blocks if "from klipjax import losses" in b)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 (our own docs)
    printed = capsys.readouterr().out
    assert "PartitionFractions(" in printed and "BetaStats(" in printed
    assert namespace["params"]["w"].shape == (8, 4)
