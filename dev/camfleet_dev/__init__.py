"""The development kit: `camfleet up`, the test bed, the local pod runner.

Never imported by product code, never shipped in an image.
"""
