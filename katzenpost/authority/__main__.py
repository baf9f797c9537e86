"""`python -m katzenpost.authority`: the same entry point as the `katzenpost-authority` script."""
import sys

from katzenpost.authority.cli import main

sys.exit(main())
