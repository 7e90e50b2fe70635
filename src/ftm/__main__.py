"""`python -m ftm` and the `ftm` console script."""

import sys


def run() -> None:
    from ftm.cli import main

    sys.exit(main())


if __name__ == "__main__":
    run()
