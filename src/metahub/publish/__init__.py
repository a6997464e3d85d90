"""The publisher side: feature-tagged indexes from per-target images (`metahub push`,
`metahub inspect`, and virtual images served from the config's `images:`)."""
