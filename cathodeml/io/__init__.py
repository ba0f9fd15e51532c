"""Readers and writers. Nothing here imports model/, md/ or train/: files know formats, not physics."""
