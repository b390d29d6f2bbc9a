"""Learning backend: datasets and partitions, the model zoo with FLOP and memory counts."""
