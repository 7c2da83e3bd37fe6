"""Subcommands of `lake-interp` that own a module of their own (each: `add_parsers(sub)`)."""
