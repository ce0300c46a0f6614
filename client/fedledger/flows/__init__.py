"""The SDK verbs: a session from settings, tasks, submitting and contributing, verifying, history and relaying."""
