"""dupwatch.daemon: the service, its socket, the desktop bridge and the `dupwatch` command."""
