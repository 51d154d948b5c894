"""Human-readable numbers with their units."""


def format_count(value: float, unit: str = "") -> str:
    """12_345_678 -> '12.35 M'. Decimal prefixes (k, M, G, T)."""
    value = float(value)
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def format_bytes(value: float) -> str:
    """Decimal megabytes/gigabytes, as bandwidth figures are quoted."""
    value = float(value)
    if abs(value) >= 1e9:
        return f"{value / 1e9:.2f} GB"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f} MB"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.1f} kB"
    return f"{value:.0f} B"
