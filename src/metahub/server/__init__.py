"""HTTP: the registry API, the token endpoint, and the application that joins them."""
