"""Running fingerprinting: the time limit of a file and the memory cap of a hashing process
(`limits.py`), what a hashing process runs (`tasks.py`), what a hashing engine is (`engine.py`:
paths in, batches of outcomes out), and the engines: capped processes on this machine fed in
batches (`local.py`, on the pools of `pool.py`), and the workers of a Dask cluster
(`cluster.py`, each file in a child process driven over a pipe: `child.py`).

Imports dupwatch.index.errors and dupwatch.index.fingerprint; never the store or the Index.
"""
