"""pytest hooks: options, phase order, the decision, exit codes."""
