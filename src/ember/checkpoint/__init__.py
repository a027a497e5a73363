"""Checkpoints: what is saved (state), how it is encoded (codec, fileformat), where it goes (storage),
when (policies) and which are kept (policies)."""
