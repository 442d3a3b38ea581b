"""How long ``compress validate`` takes, and what it imports: a fresh interpreter per run, as a user (or a
CI lint step) runs it. Prints the median wall time over ``--repeats`` runs, the interpreter's own start-up
(``python -c pass``) measured interleaved with them, and whether torch was imported.

    .venv/bin/python benchmarks/validate_time.py [--recipe recipes/quickstart.yaml] [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = ("import sys\nfrom compressor.cli import main\nsys.argv = ['compress', 'validate', {recipe!r}]\n"
         "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
         "print('torch imported:', 'torch' in sys.modules)")


def timed(code: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    validate, bare, said = [], [], ""
    for _ in range(args.repeats):  # interleaved: drift hits both alike
        seconds, said = timed(PROBE.format(recipe=args.recipe))
        validate.append(seconds)
        bare.append(timed("pass")[0])
    print(f"compress validate {args.recipe}: median {statistics.median(validate):.3f} s wall "
          f"(python start-up alone: {statistics.median(bare):.3f} s), {args.repeats} runs; {said.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
