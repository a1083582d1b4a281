"""``python -m alexnet_zoo.train ...`` (also what torchrun runs with ``-m alexnet_zoo.train``)."""

import sys

from alexnet_zoo.train.run import main

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"python -m alexnet_zoo.train: error: {err}", file=sys.stderr)
        sys.exit(2)
