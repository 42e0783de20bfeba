"""Small helpers with no knowledge of the domain: logging setup, retries, seeding, the process
environment, hub error classification. Imports nothing of the package but errors.
"""
