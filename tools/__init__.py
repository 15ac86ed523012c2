"""Repository-only tools: the protobuf code and Grafana dashboard generators, and the
type check over the installed package layout."""
