"""The models guide's first example ("## Using the models" in docs/guides/models.md, moved
there from the README) runs as written (with fewer epochs and samples) and gives what
it says. tests/test_docs.py runs every other example of the README and the docs."""

from __future__ import annotations

import pathlib
import re

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "guides" / "models.md"


def test_readme_model_example_runs():
    text = PAGE.read_text()
    code = re.search(r"## Using the models\n\n```python\n(.*?)```", text, re.S).group(1)
    shortened = (
        code.replace("n_epochs=50", "n_epochs=1")
        .replace("n_samples=10_000", "n_samples=200")
        .replace("n_samples=1000", "n_samples=100")
    )
    assert shortened != code  # the substitutions still match the page
    namespace: dict = {}
    exec(compile(shortened, str(PAGE), "exec"), namespace)
    x_imputed, s, x_missing = namespace["x_imputed"], namespace["s"], namespace["x_missing"]
    assert x_imputed.shape == (1000, 6) and bool(x_imputed.isfinite().all())
    assert namespace["draws"].shape == (5, 1000, 6)
    observed = s.bool()
    assert bool((x_imputed[observed] == x_missing[observed]).all())
