"""The analyst's side: query-file parameters, the attribution report's data and charts.

* :mod:`sinks.report.sql`: documented ``.sql`` files of ``queries/`` and their
  ``{name:Type}`` parameters (bound client-side, so they work through any route);
* :mod:`sinks.report.data`: the report's queries and their rows, read through a
  ``run(sql) -> bytes`` callable (the route ``journeys query`` uses);
* :mod:`sinks.report.charts`: pure chart building (Sankey layout, histograms, bars) to SVG;
* :mod:`sinks.report.html` and :mod:`sinks.report.terminal`: the two renderings.
"""
