"""Pipeline stage: exposition."""
