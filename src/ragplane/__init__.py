"""ragplane: retrieval-augmented generation as four gRPC services."""
