"""Search: the SQL store (source of truth), the vector index cache, query syntax, fusion and ranking."""
