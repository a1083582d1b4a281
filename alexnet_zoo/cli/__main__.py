"""``python -m alexnet_zoo.cli ARGS``: the ``alexnet-zoo`` command without its console script."""

import sys

from alexnet_zoo.cli.main import main

sys.exit(main())
