"""The Scene workspace: a captured scene trained, edited by point and type, exported."""
