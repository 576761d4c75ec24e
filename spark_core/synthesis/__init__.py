"""synthesis stage."""
