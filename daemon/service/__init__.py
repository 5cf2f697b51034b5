"""The running service (`dupwatch daemon`): `service.py` starts and stops everything;
`watcher.py` turns inotify events into changes; `writer.py` is the one thread that writes the
index, `hashing_queue.py` the files it has to hash (batches, deadlines, crashes) and
`hashers.py` the hashing processes it feeds (`worker.py` runs in them); `server.py` serves the
socket and `ops.py` answers its requests; `systemd.py` speaks sd_notify and socket
activation; `socketfile.py` and `diskfull.py` handle the socket file and a full disk.

Imports dupwatch.index, dupwatch.daemon's shared modules and wire/; never cli/, review/ or
desktop/.
"""
