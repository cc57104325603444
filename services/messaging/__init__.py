"""Tablet secure messaging cache: per-resident mailboxes, encrypted at rest, moderated centrally."""
