"""Encoders: image, text (and later audio) towers mapping media into one L2-normalised space.

Kept import-light: ``encoders.identity`` needs no torch; ``encoders.loading`` and ``encoders.clip`` do.
"""
