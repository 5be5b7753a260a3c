"""`python -m conveyor.client.cli`, the same as the `conveyor` script."""

import sys

from conveyor.client.cli import main

sys.exit(main())
