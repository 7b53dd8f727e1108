//! HTTPS listener for /mutate, plain listener for health and metrics, graceful shutdown.
