"""bundling stage."""
