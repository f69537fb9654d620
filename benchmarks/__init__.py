"""``python -m benchmarks``: every measurement against every peer in one run (see __main__)."""
