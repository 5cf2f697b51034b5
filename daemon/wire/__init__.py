"""The socket protocol (`protocol.py`: newline-delimited JSON, versions, error codes, events)
and its client (`client.py`), used by the command line and the bridges.

Imports dupwatch.daemon.config and dupwatch.index.errors only.
"""
