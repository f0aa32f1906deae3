"""Network guard for host processes started by the reliability tests (never shipped, never imported by the pack).

Put this folder on PYTHONPATH and set IQA_NETGUARD_DIR: every Python process started that way installs an
audit hook that sees each socket connect, send-to and name lookup the process attempts. Anything that is
not loopback (or a Unix socket) is refused with ConnectionRefusedError and recorded, with the Python stack
that tried it, as one JSON line in IQA_NETGUARD_DIR/<pid>.jsonl. The tests read those files to prove who
tried to reach the network: an audit hook sees attempts from every library, whichever API it used.
"""

import json
import os
import socket
import sys
import traceback

_DIR = os.environ.get("IQA_NETGUARD_DIR")
# The machine's own name is local too: torch's process launcher (accelerate launch -> torchrun) looks it
# up to name its workers, and /etc/hosts answers that without a network.
_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", "", None, socket.gethostname()}


def _is_local(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    return host in _LOCAL_NAMES or (
        isinstance(host, str) and (host.startswith("127.") or host.startswith("::ffff:127."))
    )


def _target(event, args):
    """The host a socket event is about, or False when the event is not a network attempt."""
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        address = args[1]
        if not isinstance(address, tuple):  # AF_UNIX path or abstract socket name
            return False
        return address[0]
    if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr"):
        return args[0]
    return False


def _hook(event, args):
    if not event.startswith("socket."):
        return
    host = _target(event, args)
    if host is False or _is_local(host):
        return
    stack = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()[:-1]]
    try:
        with open(os.path.join(_DIR, f"{os.getpid()}.jsonl"), "a") as fh:
            fh.write(json.dumps({"event": event, "host": str(host), "args": repr(args)[:300], "stack": stack}) + "\n")
    finally:
        raise ConnectionRefusedError(f"network guard (tests): {event} to {host!r} refused")


if _DIR:
    sys.addaudithook(_hook)
