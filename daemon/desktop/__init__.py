"""The desktop-notification bridge (`dupwatch notify`): `notify.py` follows the service's
alerts and shows them, folding bursts; `dbus.py` talks to org.freedesktop.Notifications on
the session bus.

Imports dupwatch.daemon.wire (the alert stream) and dupwatch.index.errors; never the service.
"""
