"""Who is asking: machine-type credentials, and the tokens MetaHub issues for them."""
