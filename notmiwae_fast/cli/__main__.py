"""``python -m notmiwae_fast.cli``: the ``notmiwae-fast`` command (also under torchrun)."""

from . import run

if __name__ == "__main__":
    run()
