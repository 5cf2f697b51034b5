"""Acting on duplicates, without ever losing a file: `quarantine.py` moves copies aside with a
manifest that `undo` reads back, `sidecars.py` finds the label files that travel with them.

Imports the Index and what lies below it; nothing of dupwatch.daemon.
"""
