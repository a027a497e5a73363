"""Checkpoints: what is saved (state), when and which are kept (policies, manager), how it is encoded (format/),
where it goes (storage/), how one is found and loaded (lookup, resume), Lightning files (lightning/), sharded/."""
