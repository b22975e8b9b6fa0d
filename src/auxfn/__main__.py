"""``python -m auxfn`` is the same as the ``auxfn`` command."""

from auxfn.cli import run

if __name__ == "__main__":
    run()
