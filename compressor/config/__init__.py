"""The recipe, torch-free: its schema (``schema.py``, ``deploy.py``), every method's options (``methods.py``),
reading it (``load.py``: YAML, ``${VAR}``, ``--set``) and its validation messages (``messages.py``).

``import compressor.config`` and ``compress validate --schema-only`` never import torch (a test checks it).
"""

from .deploy import (
    Backend,
    ExportConfig,
    Int8Config,
    ProfileConfig,
    StripeExportConfig,
    TensorRTConfig,
)
from .fields import ResolvedPath, StrictModel
from .load import dump_recipe, load_recipe, recipe_json_schema
from .messages import all_error_lines, format_validation_error
from .methods import METHOD_OPTIONS, MethodConfig, MethodOptions
from .schema import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SCHEMA_VERSION,
    Augment,
    BNRecalibration,
    CifarSource,
    DataConfig,
    GatesConfig,
    ImageFolderSource,
    LatencyGate,
    LatencyTarget,
    LayerRule,
    ModelConfig,
    Normalize,
    NpzSource,
    PruningConfig,
    Recipe,
    SyntheticSource,
)
from .training import DistillConfig, FinetuneConfig

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "METHOD_OPTIONS", "SCHEMA_VERSION", "Augment", "BNRecalibration", "Backend",
    "CifarSource", "DataConfig", "DistillConfig", "ExportConfig", "FinetuneConfig", "GatesConfig",
    "ImageFolderSource", "Int8Config", "LatencyGate", "LatencyTarget", "LayerRule", "MethodConfig", "MethodOptions",
    "ModelConfig", "Normalize", "NpzSource", "ProfileConfig", "PruningConfig", "Recipe", "ResolvedPath", "StrictModel",
    "StripeExportConfig", "SyntheticSource", "TensorRTConfig", "all_error_lines", "dump_recipe",
    "format_validation_error", "load_recipe", "recipe_json_schema",
]
