"""`python -m ftm` and the `ftm` console script."""

import sys


def run() -> None:
    # Before the CLI is imported: with FTM_CODE set (a container started by the batch backend),
    # this process is replaced by one running the uploaded code, which then imports its own CLI.
    from ftm.aws import code_package
    from ftm.errors import FtmError

    try:
        code_package.activate(sys.argv)
    except FtmError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)

    from ftm.cli import main

    sys.exit(main())


if __name__ == "__main__":
    run()
