"""`python -m sam2_rt.cli`: the `sam2-rt` command."""

import sys

from sam2_rt.cli.commands import main

sys.exit(main())
