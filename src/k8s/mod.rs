//! Everything that talks to the API server: watches (policy ConfigMap, namespaces, secrets)
//! and the Secret copies.
