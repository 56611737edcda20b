"""PACA Integrations client package: generated stubs under paca.<area>.v1."""
