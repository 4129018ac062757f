"""Every value check of pgraft, defined once: the clients run them before anything is sent, the
node runs the same ones on whatever a client sends, and the Raft core on what it is asked to
propose. Each returns the value (normalized where noted) or raises
:class:`~pgraft.errors.InvalidArgument` (:class:`~pgraft.errors.PayloadTooLarge` past a size
limit) with a message naming the value and a hint saying what is accepted.

Imported inside PostgreSQL backends by the synchronous client: keep it light (it imports
nothing but the errors; ``ipaddress`` is imported only when an address is checked).
"""

from __future__ import annotations

from .errors import InvalidArgument, PayloadTooLarge

# typing is imported for the type checker only: at run time it would cost the first pgraft
# call of a PostgreSQL session more than the rest of the client (pgraft/client/sync.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Highest node id and log index the wire format and the log carry (63 bits, signed-safe).
MAX_ID = 2**63 - 1
#: Longest KV key, in UTF-8 bytes.
MAX_KEY_BYTES = 64 * 1024
#: Longest host name (RFC 1035, without the trailing dot).
MAX_HOST_NAME = 253

_ID_HINT = "node ids are positive integers (1, 2, 3, ...)"
_PORT_HINT = "use a TCP port number between 1 and 65535"
_ADDRESS_HINT = "give a host name (node4.example.com) or an IP address (10.0.0.14, fd00::14)"
_INF = float("inf")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_node_id(node_id: Any, what: str = "node_id") -> int:
    """``node_id`` if it is an int in 1..2**63-1."""
    if not _is_int(node_id):
        raise InvalidArgument(f"{what} must be an integer, got {type(node_id).__name__} "
                              f"{node_id!r}", hint=_ID_HINT)
    if not 1 <= node_id <= MAX_ID:
        raise InvalidArgument(f"{what} must be at least 1 and at most 2**63-1, got {node_id}",
                              hint=_ID_HINT)
    return int(node_id)


def check_index(index: Any, what: str = "index") -> int:
    """``index`` if it is a log index: an int in 1..2**63-1."""
    if not _is_int(index):
        raise InvalidArgument(f"{what} must be an integer, got {type(index).__name__} "
                              f"{index!r}", hint="log indexes start at 1")
    if not 1 <= index <= MAX_ID:
        raise InvalidArgument(f"{what} must be at least 1 and at most 2**63-1, got {index}",
                              hint="log indexes start at 1")
    return int(index)


def check_port(port: Any, what: str = "port") -> int:
    """``port`` if it is an int in 1..65535."""
    if not _is_int(port):
        raise InvalidArgument(f"{what} must be an integer, got {type(port).__name__} {port!r}",
                              hint=_PORT_HINT)
    if not 1 <= port <= 65535:
        raise InvalidArgument(f"{what} {port} is out of range", hint=_PORT_HINT)
    return int(port)


def _host_label(label: str) -> bool:
    # RFC 1123: 1-63 ASCII letters, digits and hyphens, not starting or ending with a hyphen.
    return (0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-"
            and label.isascii() and label.replace("-", "").isalnum())


def check_address(address: Any) -> str:
    """``address`` if other nodes can dial it: a host name or an IP address, not a wildcard
    (``0.0.0.0``, ``::``) or multicast address."""
    if not isinstance(address, str):
        raise InvalidArgument(f"address must be a string, got {type(address).__name__} "
                              f"{address!r}", hint=_ADDRESS_HINT)
    if not address or address != address.strip():
        raise InvalidArgument(f"address {address!r} is empty or has surrounding spaces",
                              hint=_ADDRESS_HINT)
    import ipaddress  # only here: most calls never check an address

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
    labels = (address[:-1] if address.endswith(".") else address).split(".")
    # An all-digit last label is a malformed IPv4 address (300.1.1.1), not a host name.
    if (len(address) > MAX_HOST_NAME or not all(map(_host_label, labels))
            or labels[-1].isdigit()):
        raise InvalidArgument(f"address {address!r} is neither a valid host name nor a valid "
                              "IP address", hint=_ADDRESS_HINT)
    return address


def check_key(key: Any) -> str:
    """``key`` if it is a non-empty str of at most ``MAX_KEY_BYTES`` UTF-8 bytes."""
    if not isinstance(key, str):
        raise InvalidArgument(f"key must be a str, got {type(key).__name__}",
                              hint="KV keys and values are text; decode bytes first")
    if not key:
        raise InvalidArgument("key must not be empty", hint="use a non-empty text key")
    # A character is at most 4 UTF-8 bytes: short keys need no encoding to be measured.
    if len(key) > MAX_KEY_BYTES // 4:
        size = len(key.encode("utf-8", "surrogatepass"))
        if size > MAX_KEY_BYTES:
            raise PayloadTooLarge(f"key of {size} bytes is over the limit of {MAX_KEY_BYTES} "
                                  "bytes", hint="use short keys; store large data as values")
    return key


def check_value(value: Any) -> str:
    """``value`` if it is a str (a KV value)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"value must be a str, got {type(value).__name__}",
                              hint="KV keys and values are text; decode bytes or serialize "
                                   "the value (e.g. json.dumps) first")
    return value


def check_data(data: Any) -> bytes:
    """``data`` as bytes if it is bytes-like (a log entry's payload)."""
    if data.__class__ is bytes:
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    hint = "encode text first, e.g. data.encode()" if isinstance(data, str) else \
        "pass the payload as bytes"
    raise InvalidArgument(f"data must be bytes, got {type(data).__name__}", hint=hint)


def check_timeout(timeout: Any, what: str = "timeout", example: str = "5.0") -> float:
    """``timeout`` as a float if it is a finite number of seconds > 0 (``what`` names it in
    the message, ``example`` is the value the hint suggests)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArgument(f"{what} must be a number of seconds, got "
                              f"{type(timeout).__name__} {timeout!r}",
                              hint=f"pass e.g. {what}={example}")
    value = float(timeout)
    if not 0.0 < value < _INF:  # NaN compares false too
        raise InvalidArgument(f"{what} must be a positive, finite number of seconds, got "
                              f"{timeout!r}", hint=f"pass e.g. {what}={example}")
    return value
