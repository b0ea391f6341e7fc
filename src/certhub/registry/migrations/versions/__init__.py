"""Registry schema revisions, oldest first: 0001 creates everything."""
