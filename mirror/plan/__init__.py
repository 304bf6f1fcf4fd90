"""Planning: expand a sync configuration into source/destination image pairs."""
