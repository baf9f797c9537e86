"""`python -m katzenpost`: the same command as the `katzenpost` console script."""
import sys

from katzenpost.cli import main

if __name__ == "__main__":
    sys.exit(main())
