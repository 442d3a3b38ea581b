"""``import compressor.config`` and ``compress validate --schema-only`` never import torch (schema checks are instant)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

HEAVY = ("torch", "torch_pruning", "onnx", "onnxruntime", "openvino", "numpy")


def _imported_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('IMPORTED:', *(m for m in " + repr(HEAVY) + " if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("IMPORTED:"), out.stdout
    return set(last.split()[1:])


def test_import_compressor_config_is_torch_free():
    assert _imported_after("import compressor.config, compressor.recipe, compressor.artifacts") == set()


def test_compress_validate_schema_only_never_imports_torch():
    code = ("import sys\nfrom compressor.cli import main\n"
            "sys.argv = ['compress', 'validate', '--schema-only', 'recipes/quickstart.yaml']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n")
    assert _imported_after(code) == set()
