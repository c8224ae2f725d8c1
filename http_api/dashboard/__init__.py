"""The dashboard at ``/ui/``: a client of the public API, served as committed static files."""
