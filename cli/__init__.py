"""The ``journeys`` command line: the top layer, over the connectors, the pipeline's stages
and the sinks (``journeys`` is :func:`cli.main.main`; each command is a module of
:mod:`cli.commands`; :mod:`cli.stack` runs the processes behind ``journeys run``)."""
