"""Accounts: per-user quotas, the site's appearance, GitHub sign-in. Imports no other room of ours."""
