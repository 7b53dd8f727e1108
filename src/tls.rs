//! PEM loading and reload on change; self-signed generation.
