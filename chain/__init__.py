"""Chain snapshots: fetch every page from Massive's REST API, decompose once into projections."""
