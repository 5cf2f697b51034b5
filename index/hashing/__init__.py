"""Running fingerprinting: the time limit of a file and the memory cap of a hashing process
(`limits.py`), what a hashing process runs for one file (`tasks.py`), and many files in a
pool of such processes (`pool.py`).

Imports dupwatch.index.errors and dupwatch.index.fingerprint; never the store or the Index.
"""
