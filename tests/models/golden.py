"""Comparing against the golden vectors of docs/reference/gex.md, which are printed to a limited number of digits."""

REL = 1e-8


def matches_printed(value: float, printed: str) -> bool:
    """``value`` agrees with a golden vector as printed: to 1e-8 relative, or to half a unit of the last printed
    digit when the print itself is coarser (Γ = 0.0018549586 is 1.7e-8 relative from the exact value)."""
    text = printed.replace(",", "")
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(value) - float(text)) <= max(REL * abs(float(text)), 0.5 * 10.0**-decimals)
