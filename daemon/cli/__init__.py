"""The `dupwatch` command: `main.py` parses and picks the module that runs each command
(`commands.py` for the ones that read the index, `remote.py` for the ones that talk to the
service, `alerts.py` and `status.py` for those two, `units.py` for `service install`);
`options.py` checks the values of options as they are parsed, `helptext.py` holds the
examples and defaults of `--help`, `settings.py` is what they all share.

The top layer: it may import anything in dupwatch; nothing imports it.
"""
