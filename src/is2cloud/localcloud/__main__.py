"""``python -m is2cloud.localcloud``: run the embedded cloud's server process (see server.py)."""

import sys

from is2cloud.localcloud.server import main

sys.exit(main())
