"""Kubernetes resource quantities: parsing, and printing in the units people write them in."""

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)} | {
    suffix: Decimal(1000) ** power for power, suffix in enumerate("kMGTPE", start=1)
}
# The grammar of k8s.io/apimachinery resource.Quantity: a signed decimal, then one suffix
# (binary SI, decimal SI or a decimal exponent).
_QUANTITY = re.compile(
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)


def parse_quantity(value: object) -> Decimal:
    """The quantity as a number of base units (cores, bytes); ValueError if it is not a quantity.

    YAML hands us ints and floats for unquoted numbers, so those are read through their text form.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a quantity")
    match = _QUANTITY.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(f"{value!r} is not a quantity")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        amount = Decimal(number)
    except InvalidOperation as error:
        raise ValueError(f"{value!r} is not a quantity") from error
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    if suffix in _DECIMAL:
        return amount * _DECIMAL[suffix]
    return amount * Decimal(10) ** int(suffix[1:])


def format_cpu(cores: Decimal) -> str:
    """Whole cores as a plain number, anything finer in millicores, the way manifests spell CPU."""
    if cores == cores.to_integral_value():
        return str(int(cores))
    return f"{(cores * 1000).normalize():f}m"


def format_bytes(amount: Decimal) -> str:
    """The largest binary unit that divides the amount exactly (1536Mi rather than 1.5Gi)."""
    for suffix, size in reversed(_BINARY.items()):
        if amount >= size and amount % size == 0:
            return f"{int(amount // size)}{suffix}"
    return f"{amount.normalize():f}"
