"""`python -m codeact` runs the command line."""

import sys

from codeact.cli import main

sys.exit(main())
