"""Rules of the service: validation, the state machine, authorisation. No SQL, no gRPC."""
