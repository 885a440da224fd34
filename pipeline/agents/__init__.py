"""The worker's stages: thin shells that decode, call the pure core, and send; run by the
batch engine (:mod:`pipeline.agents.engine`) in the Faust worker."""
