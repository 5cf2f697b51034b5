"""dupwatch.index: fingerprints, the LMDB store and BK-tree, and the Index that ties them.

No threads, sockets or watching here; the service lives in dupwatch.daemon.
"""
