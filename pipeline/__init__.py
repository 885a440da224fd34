"""Journeys stream processing: identity stitching, journeys and attribution on Faust."""

__version__ = "0.1.0"
