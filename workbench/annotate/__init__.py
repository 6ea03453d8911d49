"""Preference curation in Argilla: serve an embedded server, push candidate pairs, pull judgements."""
