"""Validation of a node address, shared by the client (before anything is sent) and the node
(whatever a client sends): one definition of what other nodes can dial."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .errors import InvalidArgument

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_address(address: Any) -> str:
    """Return ``address`` if it is a host name or an IP address other nodes can dial."""
    hint = "give a host name (node4.example.com) or an IP address (10.0.0.14, fd00::14)"
    if not isinstance(address, str):
        raise InvalidArgument(f"address must be a string, got {type(address).__name__} "
                              f"{address!r}", hint=hint)
    if not address or address != address.strip():
        raise InvalidArgument(f"address {address!r} is empty or has surrounding spaces",
                              hint=hint)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_unspecified or ip.is_multicast:
            raise InvalidArgument(f"address {address} cannot be dialled by other nodes",
                                  hint="give the node's own routable IP address, not a "
                                       "wildcard or multicast address")
        return address
    name = address[:-1] if address.endswith(".") else address
    labels = name.split(".")
    if (len(address) > 253 or not all(_HOST_LABEL.match(label) for label in labels)
            or labels[-1].isdigit()):
        raise InvalidArgument(f"address {address!r} is neither a valid host name nor a valid "
                              "IP address", hint=hint)
    return address
