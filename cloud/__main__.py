"""`python -m cloud` is `fieldstation-cloud`."""

import sys

from cloud.cli import main

sys.exit(main())
