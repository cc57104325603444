"""Resident login on a tablet: the signed directory, PIN checks, back-off and sessions."""
