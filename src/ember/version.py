"""The version of ember, in one place: the package, the file format and the trainer read it from here."""

__version__ = "0.1.0"
