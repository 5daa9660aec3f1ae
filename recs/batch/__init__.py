"""Batch work past one process (issue 15): item vectors encoded into shards, a FAISS index built
from shards, and the log-sized behaviour statistics from event files partitioned by user. The
same functions run in-process or as a Ray job (`ray`, the optional `[distributed]` extra)."""
