"""``make bench``: the performance harness of Journeys (not a test; CI does not run it).

Each measurement is a module with a ``main`` that runs in its own process (chDB allows
one data path per process, and RSS figures stay clean) and writes one JSON fragment;
:mod:`bench.run` runs them in turn, merges the fragments into ``bench/results.json``
and prints the table. See docs/performance.md.
"""
