"""One module per CLI command body, so `kiln --help` imports nothing heavy."""
