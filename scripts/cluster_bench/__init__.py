"""The parts of scripts/bench_cluster.py: child processes (`procs`), figures over rounds
(`stats`), aggregate ingest of two log servers (`ingest`) and consumer failover on a ZooKeeper
ensemble (`failover`, with its load in `sender` and its observations in `watch`)."""
