"""The ``alexnet-zoo`` command line: the parser and every subcommand (main), the weights commands
(weights), extraction and index commands (search), shared option types (options) and how errors
become one line and an exit status (failures).

May import everything in the package; nothing in the package imports it except the published
benchmark recipes, which share its option types and error reporting.
"""
