"""``python -m compressor ...`` is the same as the ``compress`` command (and what torchrun launches)."""

from .cli import main

if __name__ == "__main__":
    main()
