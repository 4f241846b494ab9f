"""Importers: bring data from other formats (ASE, ...) into the simsurrogate schemas."""
