"""Widgets the panes are built from: the offer table, the sessions table and what they share."""
