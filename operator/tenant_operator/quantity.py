"""Kubernetes resource quantities: the syntax the API server accepts, and their values for comparisons."""

import re
from decimal import Decimal

# The non-negative form of resource.Quantity's syntax (a sign is never meaningful in a budget).
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)
_PARTS = re.compile(r"^(?P<number>[0-9.]+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|)(?P<exponent>[eE][-+]?[0-9.]+)?$")

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def is_quantity(text: str) -> bool:
    """Whether `text` is a non-negative Kubernetes quantity such as `500m`, `2` or `1Gi`."""
    return _QUANTITY.match(text) is not None


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity in base units (cores, bytes); ValueError when it is not one."""
    parts = _PARTS.match(text) if is_quantity(text) else None
    if parts is None:
        raise ValueError(f"{text!r} is not a quantity (examples: 500m, 2, 1Gi)")
    value = Decimal(parts["number"]) * _SUFFIXES[parts["suffix"]]
    if parts["exponent"]:
        value *= Decimal(10) ** Decimal(parts["exponent"][1:])
    return value
