"""One module per `journeys` sub-command.

Each module defines ``register(sub)``, which adds its parser to the sub-parsers
and sets ``func`` to a ``run(args) -> int`` that returns the exit code.
"""
