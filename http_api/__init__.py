"""The aiohttp application, authentication, error mapping, settings and the CLI: where the parts meet."""
