"""HTTP for the polling connectors: :mod:`.client` (one shared httpx client with a per-host
rate limit and retries) and :mod:`.errors` (what a failed request raises, and what an error
body says)."""
