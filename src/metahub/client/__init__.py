"""The registry protocol as a client speaks it: challenges, tokens, retries, redirects, pages."""
