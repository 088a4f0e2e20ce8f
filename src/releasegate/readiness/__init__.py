"""Release readiness: the runbooks' pre-deployment checklist read from the files and services
that answer it (scan reports, test results, the calendar, a signed checklist). Pure parsing and
judging; the gates in gates/test_01_readiness.py do the reading."""
