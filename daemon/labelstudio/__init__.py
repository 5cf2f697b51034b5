"""The Label Studio bridge (`dupwatch labelstudio`, the optional extra dupwatch[labelstudio]).

settings: where the token comes from (the `[labelstudio]` table is config.py's); flags: what
a flag says; tasks: which task is which file; plan: which tasks to flag; api: the server,
through the official SDK; source: groups and distances from the service or the index; bridge:
the alert-stream loop and `--sync`; command: the CLI's options and entry point.

Imports dupwatch.daemon's shared modules, wire/ and dupwatch.index; never the service, cli/,
review/ or desktop/. The SDK is imported only when the bridge runs.
"""
