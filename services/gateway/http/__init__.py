"""The gateway's HTTP API: protocol (wire types), serving (translation), router (routes)."""
