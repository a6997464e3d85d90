"""Management: machine types, credentials and admins kept in the database."""
