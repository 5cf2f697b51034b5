"""dupwatch.daemon: the service and its interfaces, on top of the library dupwatch.index.

Layers, each importing only those before it (and dupwatch.index):
- `config.py` (the settings and the config file), `render.py` (how results look, as text and
  JSON), `splits.py` (train/val/test folders and leaks): shared by all below.
- `wire/`: the socket protocol and its client.
- `service/`: the running service (watcher, writer, hashing processes, socket server, ops,
  systemd); `review/`: the HTML report, exports, groups across splits; `desktop/`: the
  desktop-notification bridge; `labelstudio/`: the Label Studio bridge. None of these
  imports another.
- `cli/`: the `dupwatch` command, on top of everything.
"""
