"""``python -m modelhost.monitor``: the analyzer image's entry point."""

import sys

from modelhost.monitor.job import main

sys.exit(main())
