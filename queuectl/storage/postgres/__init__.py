"""The shared store: PostgreSQL through asyncpg, for workers on several machines."""
