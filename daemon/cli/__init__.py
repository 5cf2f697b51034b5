"""The `dupwatch` command: `main.py` parses and picks the module that runs each command
(`commands.py` for the ones that read the index, `remote.py` for the ones that talk to the
service, `units.py` for `service install`), `settings.py` is what they share.

The top layer: it may import anything in dupwatch; nothing imports it.
"""
