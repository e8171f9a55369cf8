"""`python -m icreward.cli ...` (what torchrun launches): the same as the `icreward` command."""

import sys

from icreward.cli import main

sys.exit(main())
