"""The master data service: canonical entities, their external references, rate resolution."""
