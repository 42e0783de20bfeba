"""Disk matters only: atomic writes and renames, free-space monitoring, the space guard's
escalation, and the exhaustion report. Imports the leaf modules; knows nothing of checkpoints'
contents or of the retention policy.
"""
