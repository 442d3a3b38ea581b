"""Recipe schema: validation, error messages naming the field, overrides, paths, environment variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from compressor.config import Recipe, dump_recipe, load_recipe, recipe_json_schema
from compressor.config.schema import DEFAULT_MAX_ACCURACY_DROP
from compressor.errors import RecipeError

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def write(tmp_path: Path, data: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def base() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def error_of(tmp_path: Path, data: dict, overrides=()) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, data), overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_quickstart_validates_with_defaults_filled():
    recipe = load_recipe(QUICKSTART)
    assert recipe.method.name == "l1" and recipe.pruning.latency_target.speedup == 1.5
    assert recipe.latency_target.backend == "onnxruntime-cpu" and recipe.latency_target.batch == 32  # from profile
    assert recipe.finetune.momentum == 0.9  # default from the schema
    assert recipe.data.train.split == "train" and recipe.data.test.split == "test"  # split defaults per use
    assert recipe.model.checkpoint.name == "quicknet_shapes.pt" and recipe.model.checkpoint.is_absolute()


def test_unknown_key_names_field_and_suggests(tmp_path):
    data = base()
    data["finetune"]["epoch"] = 3
    msg = error_of(tmp_path, data)
    assert "finetune.epoch: unknown field" in msg and "did you mean 'epochs'" in msg


def test_a_misspelt_method_or_data_format_gets_did_you_mean(tmp_path):
    data = base()
    data["method"] = {"name": "l11"}
    msg = error_of(tmp_path, data)
    assert "method.name: unknown name 'l11' (did you mean 'l1'?" in msg and "hrank" in msg
    data = base()
    data["data"]["train"]["format"] = "synthetc"
    assert "did you mean 'synthetic'?" in error_of(tmp_path, data)


def test_unknown_key_inside_union_member_lists_that_members_fields(tmp_path):
    data = base()
    data["data"]["train"]["nmu_images"] = 5
    msg = error_of(tmp_path, data)
    assert "data.train.nmu_images: unknown field" in msg and "num_images" in msg
    data = base()
    data["method"]["reductoin"] = "mean"
    msg = error_of(tmp_path, data)
    assert "method.reductoin" in msg and "reduction" in msg


@pytest.mark.parametrize("path,value,expect", [
    (("pruning", "macs_reduction_pct"), -5, "pruning.macs_reduction_pct"),
    (("pruning", "residual"), "sideways", "pruning.residual"),
    (("finetune", "epochs"), "three", "finetune.epochs"),
    (("data", "batch_size"), 0, "data.batch_size"),
    (("method", "name"), "l9", "unknown name 'l9'"),
    (("data", "train", "format"), "tfrecord", "unknown format 'tfrecord'"),
    (("name",), "has space", "name"),
])
def test_bad_values_name_the_field(tmp_path, path, value, expect):
    data = base()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert expect in error_of(tmp_path, data)


def test_ratio_and_target_are_exclusive_and_one_is_needed(tmp_path):
    data = base()
    data["pruning"]["ratio"] = 0.3
    assert "not ratio and latency_target" in error_of(tmp_path, data)
    data["pruning"] = {"residual": "internal"}
    assert "nothing to prune" in error_of(tmp_path, data)


def test_negative_ratio_and_ratio_of_one_rejected(tmp_path):
    data = base()
    del data["pruning"]["latency_target"]
    for bad in (-0.1, 1.0):
        data["pruning"]["ratio"] = bad
        assert "pruning.ratio" in error_of(tmp_path, data)


def test_missing_section(tmp_path):
    data = base()
    del data["model"]
    assert "model: required field is missing" in error_of(tmp_path, data)


def test_latency_gate_batch_must_be_profiled(tmp_path):
    data = base()
    data["gates"]["max_latency_ms"] = [{"batch": 8, "p50_ms": 1.0}]
    assert "batch 8 is not profiled" in error_of(tmp_path, data)


def test_invalid_yaml_reports_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(RecipeError, match=r"line \d+"):
        load_recipe(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        load_recipe(path)


def test_overrides_types_nesting_and_lists(tmp_path):
    data = base()
    data["gates"]["max_latency_ms"] = [{"batch": 1, "p50_ms": 5.0}]
    path = write(tmp_path, data)
    recipe = load_recipe(path, ["finetune.epochs=5", "pruning.residual=internal", "gates.max_latency_ms.0.p50_ms=2.5",
                                "profile.batch_sizes=[1, 8]", "gates.max_latency_ms.0.batch=8"])
    assert recipe.finetune.epochs == 5 and recipe.pruning.residual == "internal"
    assert recipe.gates.max_latency_ms[0].p50_ms == 2.5 and recipe.profile.batch_sizes == [1, 8]


@pytest.mark.parametrize("override,expect", [
    ("finetune.epochz=3", "finetune.epochz: unknown field"),
    ("finetune.epochs", "expected key.path=value"),
    ("gates.max_latency_ms.3.p50_ms=1", "not an index"),
    ("finetune..epochs=1", "empty part"),
])
def test_bad_overrides(tmp_path, override, expect):
    assert expect in error_of(tmp_path, base(), [override])


def test_relative_paths_file_relative_and_set_relative_to_cwd(tmp_path, monkeypatch):
    data = base()
    data["model"]["checkpoint"] = "weights/m.pt"
    sub = tmp_path / "recipes"
    sub.mkdir()
    path = write(sub, data)
    assert load_recipe(path).model.checkpoint == sub / "weights" / "m.pt"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    recipe = load_recipe(path, ["model.checkpoint=other.pt", "finetune.epochs=1"])
    assert recipe.model.checkpoint == work / "other.pt"


def test_environment_variables(tmp_path, monkeypatch):
    data = base()
    data["model"]["checkpoint"] = "${MY_CKPT}"
    monkeypatch.delenv("MY_CKPT", raising=False)
    msg = error_of(tmp_path, data)
    assert "model.checkpoint uses ${MY_CKPT}" in msg and "--set model.checkpoint" in msg
    monkeypatch.setenv("MY_CKPT", str(tmp_path / "c.pt"))
    assert load_recipe(write(tmp_path, data)).model.checkpoint == tmp_path / "c.pt"
    data["model"]["checkpoint"] = "${UNSET_VAR_X:-fallback.pt}"
    assert load_recipe(write(tmp_path, data)).model.checkpoint == tmp_path / "fallback.pt"


def test_a_relative_path_from_the_environment_is_taken_from_the_current_folder(tmp_path, monkeypatch):
    recipes, shell = tmp_path / "recipes", tmp_path / "shell"
    recipes.mkdir(), (shell / "ckpt").mkdir(parents=True)
    data = base()
    data["model"]["checkpoint"] = "${MY_CKPT:-../default.pt}"
    monkeypatch.chdir(shell)
    monkeypatch.setenv("MY_CKPT", "ckpt/resnet56.th")  # typed in the shell's folder
    assert load_recipe(write(recipes, data)).model.checkpoint == shell / "ckpt" / "resnet56.th"
    monkeypatch.delenv("MY_CKPT")  # the default is written in the recipe: relative to the recipe file
    assert load_recipe(write(recipes, data)).model.checkpoint == (recipes / ".." / "default.pt").resolve()
    data["name"] = "${MY_NAME}"  # not a path: left alone
    monkeypatch.setenv("MY_NAME", "r56")
    assert load_recipe(write(recipes, data)).name == "r56"


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(QUICKSTART)
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_recipe(recipe))
    assert load_recipe(path) == recipe


def test_json_schema_has_every_method_and_section():
    schema = recipe_json_schema()
    text = str(schema)
    for name in ("l1", "l2", "fpgm", "random"):
        assert f"'{name}'" in text
    assert set(Recipe.model_fields) <= set(schema["properties"])


def test_shipped_recipes_validate():
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert recipes, "no shipped recipes"
    for path in recipes:
        load_recipe(path)


def test_setting_a_section_merges_into_it(tmp_path):
    recipe = load_recipe(QUICKSTART, ["pruning={latency_target: null, macs_reduction_pct: 40}"])
    assert recipe.pruning.macs_reduction_pct == 40
    assert recipe.pruning.residual == "coupled"  # kept from the file


def test_an_empty_mapping_resets_a_section():
    recipe = load_recipe(QUICKSTART, ["gates={}"])  # to the defaults: the accuracy gate is on unless null
    assert recipe.gates.max_accuracy_drop == DEFAULT_MAX_ACCURACY_DROP and recipe.gates.min_macs_reduction_pct is None


def test_the_accuracy_gate_is_on_by_default_and_null_turns_it_off(tmp_path):
    text = QUICKSTART.read_text().replace("gates:\n  max_accuracy_drop: 5.0\n", "")
    assert "max_accuracy_drop" not in text
    (tmp_path / "r.yaml").write_text(text)
    assert load_recipe(tmp_path / "r.yaml").gates.max_accuracy_drop == DEFAULT_MAX_ACCURACY_DROP == 1.0
    assert load_recipe(QUICKSTART, ["gates.max_accuracy_drop=null"]).gates.max_accuracy_drop is None
    (tmp_path / "off.yaml").write_text(text + "gates:\n  max_accuracy_drop: null\n")
    assert load_recipe(tmp_path / "off.yaml").gates.max_accuracy_drop is None


def test_every_shipped_recipe_states_its_gates():
    for path in sorted((QUICKSTART.parent).glob("*.yaml")):
        gates = yaml.safe_load(path.read_text()).get("gates") or {}
        assert "max_accuracy_drop" in gates, f"{path.name} leaves its accuracy gate to the default"


def test_setting_another_kind_of_entry_replaces_it():
    recipe = load_recipe(QUICKSTART, ["data.test={format: npz, path: x.npz}", "method={name: fpgm}"])
    assert recipe.data.test.format == "npz" and recipe.data.test.images_key == "data"
    assert recipe.method.name == "fpgm"
    recipe = load_recipe(QUICKSTART, ["data.train={num_images: 300}"])  # same kind: merged
    assert recipe.data.train.format == "synthetic" and recipe.data.train.num_images == 300


def test_switching_the_method_by_name_drops_the_old_methods_defaults():
    recipe = load_recipe(QUICKSTART, ["method.name=hrank"])
    assert recipe.method.name == "hrank" and recipe.method.images == 500


def test_stripe_export_options_are_checked():
    recipe = load_recipe(QUICKSTART, ["export.stripe={form: stripe, batch: 8, min_gain: 0.1}"])
    assert (recipe.export.stripe.enabled, recipe.export.stripe.form, recipe.export.stripe.batch) == ("auto", "stripe", 8)
    with pytest.raises(RecipeError, match="export.stripe.enabled: true needs export.onnx"):
        load_recipe(QUICKSTART, ["export.onnx=false", "export.stripe.enabled=true"])
    with pytest.raises(RecipeError, match="export.stripe.form"):
        load_recipe(QUICKSTART, ["export.stripe.form=sparse"])


def test_recipe_backends_are_the_profilers_backends():
    import typing

    from compressor.config import Backend
    from compressor.profiling.backends import BACKENDS

    assert set(typing.get_args(Backend)) == set(BACKENDS)


def test_openvino_times_the_onnx_files_and_their_variants():
    recipe = load_recipe(QUICKSTART, ["profile.backends=[onnxruntime-cpu, openvino-cpu]", "export.precisions=[int8]",
                                      "gates.max_latency_ms=[{batch: 1, p50_ms: 5, backend: openvino-cpu, "
                                      "artifact: pruned_int8}, {batch: 1, p50_ms: 5, backend: openvino-cpu}]"])
    assert [g.artifact for g in recipe.gates.max_latency_ms] == ["pruned_int8", "pruned_onnx"]
    from compressor.errors import RecipeError

    with pytest.raises(RecipeError, match="artifact pruned_torch is not measured on openvino-cpu"):
        load_recipe(QUICKSTART, ["profile.backends=[openvino-cpu]", "gates.max_latency_ms=[{batch: 1, p50_ms: 5, "
                                 "backend: openvino-cpu, artifact: pruned_torch}]"])


@pytest.mark.parametrize("overrides, expected", [
    (["gates.max_latency_ms=[{batch: 1, p50_ms: 5, artifact: pruned_int8}]"], "pruned_int8 is not measured"),
    (["export.precisions=[int8, int8]"], "int8 listed more than once"),
    (["profile.backends=[torch-cpu, torch-cpu]"], "torch-cpu listed more than once"),
    (["export.tensorrt.enabled=true", "export.tensorrt.opt_batch=64"], "opt_batch (64) exceeds"),
    (["export.tensorrt.enabled=true", "export.tensorrt.max_batch=8", "profile.backends=[tensorrt]"],
     "max_batch (8) is below"),
], ids=["gate on an artifact not exported", "duplicate precision", "duplicate backend", "opt over max",
        "engine batch too small"])
def test_deployment_settings_are_checked_together(overrides, expected):
    from compressor.errors import RecipeError

    with pytest.raises(RecipeError, match=re.escape(expected)):
        load_recipe(QUICKSTART, overrides)


def test_a_resolved_recipe_is_read_without_expanding_the_environment(tmp_path, monkeypatch):
    """``recipe.resolved.yaml`` was expanded when it was written; on --resume, ``${...}`` stays literal (a run
    folder must not pull the resuming machine's environment into the run)."""
    data = base()
    data["model"]["kwargs"] = {"note": "${COMPRESSOR_TEST_SECRET}"}
    path = write(tmp_path, data)
    monkeypatch.setenv("COMPRESSOR_TEST_SECRET", "s3cret")
    assert load_recipe(path).model.kwargs["note"] == "s3cret"
    assert load_recipe(path, expand=False).model.kwargs["note"] == "${COMPRESSOR_TEST_SECRET}"


@pytest.mark.parametrize("pruning,expect", [
    ({"latency_target": {}}, "exactly one of speedup"),
    ({"latency_target": {"speedup": 2, "ms": 1.0}}, "exactly one of speedup"),
    ({"latency_target": {"speedup": 0.9}}, "pruning.latency_target.speedup"),
    ({"latency_target": {"speedup": 2}, "macs_reduction_pct": 50}, "not macs_reduction_pct and latency_target"),
    ({"latency_target": {"speedup": 2, "backend": "torch-cpu"}}, "is not in profile.backends"),
    ({"latency_target": {"speedup": 2, "batch": 8}}, "batch 8 is not profiled"),
    ({"latency_target": {"speedup": 2, "allocation": "greedy"}}, "pruning.latency_target.allocation"),
    ({"latency_target": {"speedup": 2, "backend": "tensorrt"}}, "is not in profile.backends"),
])
def test_latency_target_errors_name_the_field(tmp_path, pruning, expect):
    data = base()
    data["pruning"] = {"residual": "coupled", **pruning}
    assert expect in error_of(tmp_path, data)


@pytest.mark.parametrize("method", [{"name": "sfp"}, {"name": "swp"}, {"name": "functionality", "threshold": 0.9}])
def test_latency_target_refuses_methods_that_decide_the_channels(tmp_path, method):
    data = base()
    data["method"] = method
    assert "decides the channels itself" in error_of(tmp_path, data)


def test_latency_target_needs_profiling_and_defaults_to_the_first_backend_and_largest_batch(tmp_path):
    data = base()
    data["profile"]["enabled"] = False
    assert "needs profiling and the ONNX export" in error_of(tmp_path, data)
    recipe = load_recipe(QUICKSTART, ["profile.backends=[torch-cpu, onnxruntime-cpu]", "profile.batch_sizes=[4, 2]",
                                      "pruning.latency_target={speedup: null, ms: 3.5, tolerance_pct: 10}"])
    target = recipe.latency_target
    assert (target.backend, target.batch, target.ms, target.tolerance_pct) == ("torch-cpu", 4, 3.5, 10)
    assert recipe.pruning.latency_target.backend is None  # the recipe as written; Recipe.latency_target resolves


@pytest.mark.parametrize("method, pruning, expect", [
    ({"name": "swp"}, {"ratio": 0.5}, "pruning.ratio: method swp removes stripes, not channels"),
    ({"name": "swp", "mode": "reconstruct", "sparsity": 0.5}, {"layer_ratios": [0.5]}, "pruning.layer_ratios: method swp"),
    ({"name": "swp"}, {"macs_reduction_pct": 40}, "meets a MACs target in method.mode: reconstruct only"),
    ({"name": "swp", "mode": "reconstruct"}, {}, "takes one budget: method.sparsity (a share of the stripes) or "
     "pruning.macs_reduction_pct (counted on the stripe graph), e.g. sparsity: 0.5"),
    ({"name": "swp", "mode": "reconstruct", "sparsity": 0.5}, {"macs_reduction_pct": 40}, "not both"),
])
def test_swp_budgets_are_stripes_or_macs_never_channels(tmp_path, method, pruning, expect):
    data = base()
    data["method"], data["pruning"] = method, {"residual": "internal", **pruning}
    assert expect in error_of(tmp_path, data)


def test_swp_reconstruct_takes_a_macs_target(tmp_path):
    data = base()
    data["method"], data["pruning"] = {"name": "swp", "mode": "reconstruct"}, {"macs_reduction_pct": 40}
    recipe = load_recipe(write(tmp_path, data))
    assert recipe.pruning.macs_reduction_pct == 40 and recipe.method.sparsity is None
