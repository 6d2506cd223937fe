"""Running several siasync servers: a throwaway PostgreSQL, a round-robin proxy, and the local recipe."""
