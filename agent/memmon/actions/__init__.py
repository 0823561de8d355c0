"""Pipeline stage: actions."""
