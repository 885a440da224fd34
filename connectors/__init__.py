"""Channel connectors: map each source's own payloads to canonical touchpoints.

One module per source with a pure ``map`` from payload to touchpoints (PII hashed on
the spot, deterministic event ids), and thin I/O around them (replay, collector).
"""
