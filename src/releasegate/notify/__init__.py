"""Telling people: a Slack-compatible webhook at the start and the end of a deployment."""
