"""Pipeline stage: alerting."""
