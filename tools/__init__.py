"""Repository-only generators: protobuf code and Grafana dashboards."""
