"""Pure builders: a parsed Camera (plus explicit inputs) in, the desired child object out.

No I/O, no globals, no clocks, no randomness: the same inputs always give the same dict, which is
what golden files and "patch only if different" rely on.
"""
