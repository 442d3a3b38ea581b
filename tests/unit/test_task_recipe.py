"""The recipe's task section: classification by default, custom with its functions; one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compressor.config import load_recipe
from compressor.errors import RecipeError

REPO = Path(__file__).resolve().parents[2]
DETECT = REPO / "recipes" / "detect_shapes_custom.yaml"


def custom() -> dict:
    return yaml.safe_load(DETECT.read_text())


def error_of(tmp_path: Path, data: dict, overrides=()) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_classification_is_the_default_and_a_bare_word_works(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    assert recipe.task.kind == "classification" and recipe.task.primary == "top1" and recipe.batch_size == 128
    assert load_recipe(REPO / "recipes" / "quickstart.yaml", ["task=classification"]).task.kind == "classification"


def test_the_shipped_custom_recipes_validate():
    recipe = load_recipe(DETECT)
    assert recipe.task.kind == "custom" and recipe.task.primary == "map50" and recipe.task.direction == "higher"
    assert recipe.data is None and recipe.batch_size == 32
    assert load_recipe(REPO / "recipes" / "segment_shapes_custom.yaml").task.primary == "miou"


def test_custom_needs_its_functions(tmp_path):
    data = custom()
    del data["task"]["loaders"]
    message = error_of(tmp_path, data)
    assert "task.loaders: required field is missing" in message


def test_a_function_name_must_be_module_colon_name(tmp_path):
    data = custom()
    data["task"]["loss"] = "examples.detection.task.loss"
    assert "loss" in error_of(tmp_path, data)


def test_direction_is_higher_or_lower(tmp_path):
    data = custom()
    data["task"]["direction"] = "down"
    assert "direction" in error_of(tmp_path, data)


def test_classification_needs_data(tmp_path):
    data = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    del data["data"]
    assert "(top level): data: task classification needs a data section" in error_of(tmp_path, data)


def test_custom_refuses_a_data_section(tmp_path):
    data = custom()
    data["data"] = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())["data"]
    assert "data: a custom task brings its own data (task.loaders)" in error_of(tmp_path, data)


@pytest.mark.parametrize("override,field", [
    ("export.precisions=[fp16]", "export.precisions"),
    ("gates.max_variant_accuracy_drop=1", "gates.max_variant_accuracy_drop"),
    ("finetune.label_smoothing=0.1", "finetune.label_smoothing"),
])
def test_what_a_custom_task_cannot_do_yet_is_refused(tmp_path, override, field):
    assert field in error_of(tmp_path, custom(), [override])
