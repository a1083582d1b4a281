"""The training recipe: the paper's (defaults) and modern options, one GPU, torchrun, or the
paper's two towers. A layer above the library: it imports ``alexnet_zoo``, never the reverse.

``python -m alexnet_zoo.train --data DIR`` or ``alexnet-zoo train --data DIR``; from Python,
``main(["--data", DIR, ...])``. See ``docs/training.md``.
"""

from alexnet_zoo.train.args import get_args_parser
from alexnet_zoo.train.loop import evaluate, train_one_epoch
from alexnet_zoo.train.run import load_data, main

__all__ = ["evaluate", "get_args_parser", "load_data", "main", "train_one_epoch"]
