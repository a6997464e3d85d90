"""The pull path: manifests (selection and the filtered-digest store), blobs, explanations."""
