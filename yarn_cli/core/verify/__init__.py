"""`yarn verify`'s protocol: the ladder, memory, verdict, parity diagnosis, heatmaps and RULER."""
