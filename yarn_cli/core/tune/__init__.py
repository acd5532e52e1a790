"""`yarn tune`'s decisions and its retrieval probes."""
