"""The HTTP service: the app factory, its routes and the one mapping of errors to status codes."""
