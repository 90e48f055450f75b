"""Indexer: scan folders, decode files (images, sounds, notes) and their metadata, embed and commit them."""
