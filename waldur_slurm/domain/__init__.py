"""Domain rules with no I/O: account naming and validity, components and units, value checks, URLs."""
