"""Image specs and the index bytes built from them: shared by the publisher and virtual images."""
