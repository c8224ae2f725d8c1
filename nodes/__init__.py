"""Node types: the plugin contract, the registry and the built-in types.

This package is the bottom layer: it imports nothing else of graph-runtime.
"""
