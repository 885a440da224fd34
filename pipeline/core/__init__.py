"""The pure core of Journeys.

Nothing in this package imports Faust, Kafka or ClickHouse, reads the environment
or touches the network: it is plain Python (and numpy) over plain values, tested
without any service.
"""
