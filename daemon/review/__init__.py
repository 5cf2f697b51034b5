"""Reviewing duplicates: the groups a command shows (`across.py`), the HTML report
(`report.py`, its pictures in `thumbnails.py`, where it goes in `destination.py`) and the
text, JSON, CSV and imagededup outputs (`exports.py`).

Imports dupwatch.index and dupwatch.daemon's shared modules; never the service or cli/.
"""
