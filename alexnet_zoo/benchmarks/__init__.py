"""Recipes that reproduce published numbers, one command each (``python -m alexnet_zoo.benchmarks.imagenet``).

Each recipe parses arguments and calls the library; ``main(argv)`` takes an argument list and
returns its report, so tests run it directly. The library never imports from here.
"""

__all__: list[str] = []
