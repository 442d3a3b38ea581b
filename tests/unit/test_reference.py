"""``docs/recipe.md``, the recipe field reference (``compress schema --format markdown``), is current and whole."""

from __future__ import annotations

import re
from pathlib import Path

from compressor.config import Recipe
from compressor.config.reference import recipe_reference

DOCS = Path(__file__).resolve().parents[2] / "docs" / "recipe.md"


def test_committed_reference_is_what_the_schema_prints():
    assert DOCS.read_text(encoding="utf-8") == recipe_reference(), (
        "docs/recipe.md is stale: run `.venv/bin/compress schema --format markdown --out docs/recipe.md`")


def test_every_field_is_listed_with_a_default_and_tables_are_well_formed():
    text = recipe_reference()
    for section in Recipe.model_fields:
        assert f"| `{section}` |" in text
    for field in ("data.train.labels_key", "pruning.latency_target.speedup", "gates.max_accuracy_drop",
                  "method.alpha", "export.tensorrt.precisions", "gates.max_latency_ms.p50_ms"):
        assert f"| `{field}` |" in text, field
    assert "The same kinds and fields as `data.train`" in text  # data.test is not written out twice
    for line in text.splitlines():
        if line.startswith("|"):
            assert len(re.split(r"(?<!\\)\|", line.strip())) - 2 == 4, line
