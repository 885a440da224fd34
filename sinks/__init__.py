"""Sinks: consume the pipeline's output topics and write them to ClickHouse."""
