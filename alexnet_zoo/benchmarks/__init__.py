"""Recipes that reproduce published numbers, one command each (``python -m alexnet_zoo.benchmarks.imagenet``:
ILSVRC-2012 accuracy; ``python -m alexnet_zoo.benchmarks.retrieval``: Holidays, UKBench, Oxford5k, Paris6k).

Each recipe parses arguments and calls the library; ``main(argv)`` takes an argument list and
returns its report, so tests run it directly. The library never imports from here; the command
line does (``alexnet-zoo evaluate`` is the imagenet recipe, with its parser).
"""

__all__: list[str] = []
