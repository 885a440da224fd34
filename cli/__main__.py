"""``python -m cli``: the same as the ``journeys`` command."""

import sys

from cli.main import main

sys.exit(main())
